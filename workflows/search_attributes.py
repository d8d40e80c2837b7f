"""Typed search-attribute keys the invoice workflow upserts, declared once for the UI and the set-up.

Mind the dev server's SQLite visibility store: at most 3 Int and 3 KeywordList attributes.
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

ALL: tuple[SearchAttributeKey[Any], ...] = (
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
