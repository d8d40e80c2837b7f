"""Typed search-attribute keys the invoice and customer workflows upsert, declared once for the UI and the set-up.

Mind the dev server's SQLite visibility store: at most 3 Int, 3 Double, 3 Bool and 3 KeywordList
attributes. So the customer's invoice counts are Doubles, and the customer reuses ``CustomerId``,
``DueDate`` (its oldest open invoice's) and ``DaysOverdue`` (that invoice's, at the last change).
"""

from typing import Any

from temporalio.common import SearchAttributeKey

INVOICE_STATE = SearchAttributeKey.for_keyword("InvoiceState")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
AMOUNT_DUE = SearchAttributeKey.for_int("AmountDue")
CURRENCY = SearchAttributeKey.for_keyword("Currency")
DUE_DATE = SearchAttributeKey.for_datetime("DueDate")
DAYS_OVERDUE = SearchAttributeKey.for_int("DaysOverdue")
REJECTED_PAYMENTS = SearchAttributeKey.for_int("RejectedPayments")
FAILED_NOTICES = SearchAttributeKey.for_keyword_list("FailedNotices")
FAILED_EQUIPMENT = SearchAttributeKey.for_keyword_list("FailedEquipment")
CUSTOMER_STANDING = SearchAttributeKey.for_keyword("CustomerStanding")
OPEN_INVOICES = SearchAttributeKey.for_float("OpenInvoices")
SUSPENDED_INVOICES = SearchAttributeKey.for_float("SuspendedInvoices")
ON_HOLD = SearchAttributeKey.for_bool("OnHold")

INVOICE: tuple[SearchAttributeKey[Any], ...] = (  # what the invoice workflow upserts (and is started with)
    INVOICE_STATE,
    CUSTOMER_ID,
    AMOUNT_DUE,
    CURRENCY,
    DUE_DATE,
    DAYS_OVERDUE,
    REJECTED_PAYMENTS,
    FAILED_NOTICES,
    FAILED_EQUIPMENT,
)
CUSTOMER: tuple[SearchAttributeKey[Any], ...] = (CUSTOMER_ID, CUSTOMER_STANDING, OPEN_INVOICES, SUSPENDED_INVOICES, ON_HOLD, DAYS_OVERDUE, DUE_DATE)

ALL: tuple[SearchAttributeKey[Any], ...] = (*INVOICE, CUSTOMER_STANDING, OPEN_INVOICES, SUSPENDED_INVOICES, ON_HOLD)  # what a namespace must have
