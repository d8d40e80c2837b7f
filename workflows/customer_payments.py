"""The customer workflow's cash desk: takes payments, splits them across open invoices and delivers each part.

Exactly once under retries and crashes: a payment's allocations are decided and kept in the
customer's state (``CashBook``) before any invoice hears of them, then delivered by an activity that
calls the invoice's idempotent ``record_payment`` update with the allocation's payment id. The run
loop does one thing at a time (deliver what is decided, then split the next payment, then give credit
to a newly opened invoice), so two payments never split against the same balances.

Which invoices are open: those the customer registered (``invoice_opened``, sent when an invoice is
started), those that held something, and those a payment's sender lists (the API reads them from the
read model). Their balances are asked of the invoices themselves just before a split.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from workflows import contracts
    from workflows.cash import (
        Allocation,
        CashBook,
        CustomerPayment,
        DeliverAllocation,
        InvoiceBalance,
        OpenInvoice,
        PaymentApplication,
        allocate,
        allocation_id,
        fingerprint,
    )
    from workflows.holds import CustomerLedger
    from workflows.models import format_money
    from workflows.outbox import IO_RETRY, one_line
    from workflows.payments import field_problems, storable

ACTIVITY_TIMEOUT = timedelta(seconds=30)


class CashDesk:
    """Cash application for one customer; its state is ``ledger.cash``."""

    def __init__(self, ledger: CustomerLedger) -> None:
        self.ledger = ledger

    @property
    def book(self) -> CashBook:
        return self.ledger.cash

    # --- what handlers call (no awaiting) ------------------------------------------------------

    def conflict(self, payment: CustomerPayment) -> ApplicationError | None:
        """A refusal when the payment id names another payment of this customer (409 at the API)."""
        known = self.book.payments.get(payment.payment_id)
        if known is not None and not known.payment.same_payment(payment):
            was = known.payment
            return self._conflict(
                payment, f" as {format_money(was.amount_minor, was.currency)} on {was.received_at.date()}"
            )
        settled = self.book.settled.get(payment.payment_id)
        if settled is not None and settled != fingerprint(payment):
            return self._conflict(payment, " (applied long ago) with other content")
        return None

    def _conflict(self, payment: CustomerPayment, how: str) -> ApplicationError:
        return ApplicationError(
            f"payment {payment.payment_id} was already received from customer {self.ledger.customer_id}{how};"
            " a payment id names one payment",
            type="PaymentConflict",
            non_retryable=True,
        )

    def take(self, payment: CustomerPayment) -> PaymentApplication:
        """Register a payment (or find it again): it waits for the loop to split it."""
        self.book.learn(payment.open_invoices)
        if known := self.book.payments.get(payment.payment_id):
            return known
        if payment.payment_id in self.book.settled:
            bare = payment.model_copy(update={"open_invoices": []})
            return PaymentApplication(payment=bare, allocated=True, settled_earlier=True)
        application = PaymentApplication(payment=payment.model_copy(update={"open_invoices": []}))
        self.book.payments[payment.payment_id] = application
        self.book.to_allocate.append(payment.payment_id)
        money = format_money(payment.amount_minor, payment.currency)
        self.ledger.remember(workflow.now(), f"Payment {payment.payment_id}: {money} received (value date {payment.received_at.date()})")
        return application

    def decode(self, raw: RawValue) -> CustomerPayment | str:
        """The payment a ``payment_received`` signal carries, or why it carries none."""
        try:
            payment = workflow.payload_converter().from_payload(raw.payload, CustomerPayment)
        except ValidationError as err:
            return f"malformed payment: {field_problems(err)}"
        except Exception as err:  # noqa: BLE001 - any decoding failure is a rejected payment, not a task failure
            return f"malformed payment: {one_line(err)}"
        if not isinstance(payment, CustomerPayment):
            return f"malformed payment: not a payment object but {type(payment).__name__}"
        if payment.customer_id != self.ledger.customer_id:
            return f"payment {payment.payment_id} is for customer {payment.customer_id}"
        if problem := self.conflict(payment):
            return problem.message
        return payment

    def reject(self, reason: str) -> None:
        self.book.rejected += 1
        self.ledger.remember(workflow.now(), f"Payment rejected: {storable(reason)[:200]}")

    def opened(self, invoice: OpenInvoice) -> None:
        """An invoice was started: register it; it takes the customer's credit in its currency, if there is some now."""
        if invoice.invoice_id in self.book.open_invoices:
            return
        self.book.open_invoices[invoice.invoice_id] = invoice
        if self.book.credit_lots(invoice.currency):
            self.book.to_credit.append(invoice.invoice_id)

    # --- what the run loop does ---------------------------------------------------------------

    async def work(self) -> None:
        """One step: deliver what is decided, else split the next payment, else give credit to a new invoice."""
        book = self.book
        book.compact()
        waiting = [(application, a) for application in book.payments.values() for a in book.undelivered(application)]
        if waiting:
            for application, allocation in waiting:
                await self._deliver(application, allocation)
            return
        if book.to_allocate:
            await self._split(book.payments[book.to_allocate[0]])
            book.to_allocate.pop(0)
            return
        if book.to_credit:
            invoice_id = book.to_credit.pop(0)
            if invoice_id in book.open_invoices:
                await self._give_credit(book.open_invoices[invoice_id])

    async def _split(self, application: PaymentApplication) -> None:
        payment, known = application.payment, self._known()
        candidates = [i for i, invoice in known.items() if invoice.currency == payment.currency]
        balances = await self._balances(candidates)
        due = {i: invoice.due_date for i, invoice in known.items()}
        parts, left = allocate(payment.amount_minor, payment.remittance, payment.rule, balances, due)
        for invoice_id, amount, named in parts:
            application.allocations.append(
                Allocation(
                    invoice_id=invoice_id,
                    payment_id=allocation_id(payment.payment_id, invoice_id),
                    amount_minor=amount,
                    named=named,
                )
            )
        application.credit_minor, application.allocated = left, True
        split = ", ".join(f"{format_money(a, payment.currency)} to {i}" for i, a, _ in parts) or "no open invoice"
        credit = f"; {format_money(left, payment.currency)} kept as credit" if left else ""
        self.ledger.remember(workflow.now(), f"Payment {payment.payment_id} split: {split}{credit}")

    def _known(self) -> dict[str, OpenInvoice]:
        """The invoices registered as open, and those that hold a piece (invoices started before registration)."""
        holding = {
            i: OpenInvoice(invoice_id=i, due_date=invoice.due_date, currency=invoice.currency)
            for i, invoice in self.ledger.invoices.items()
        }
        return {**holding, **self.book.open_invoices}

    async def _give_credit(self, invoice: OpenInvoice) -> None:
        lots = self.book.credit_lots(invoice.currency)
        if not lots:
            return
        balances = await self._balances([invoice.invoice_id])
        owed = balances[0].balance_minor if balances and balances[0].open else 0
        for application in lots:
            if not owed:
                break
            payment = application.payment
            payment_id = allocation_id(payment.payment_id, invoice.invoice_id)
            if any(a.payment_id == payment_id for a in application.allocations):
                continue  # this payment already paid into that invoice: its id names one allocation
            part = min(owed, application.credit_minor)
            application.credit_minor -= part
            owed -= part
            application.allocations.append(
                Allocation(
                    invoice_id=invoice.invoice_id,
                    payment_id=payment_id,
                    amount_minor=part,
                    named=False,
                    from_credit=True,
                    value_date=workflow.now(),  # the credit pays the invoice now, however long ago the money came
                )
            )
            money = format_money(part, payment.currency)
            self.ledger.remember(workflow.now(), f"Credit of payment {payment.payment_id}: {money} to new invoice {invoice.invoice_id}")

    async def _balances(self, invoice_ids: list[str]) -> list[InvoiceBalance]:
        if not invoice_ids:
            return []
        balances = await workflow.execute_activity_method(
            contracts.CustomerPayments.invoice_balances,
            invoice_ids,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=IO_RETRY,
            summary=f"Balances of {len(invoice_ids)} invoice(s)",
        )
        for balance in balances:
            if not balance.open:  # closed (or never started): no longer a candidate
                self.book.open_invoices.pop(balance.invoice_id, None)
        return balances

    async def _deliver(self, application: PaymentApplication, allocation: Allocation) -> None:
        payment = application.payment
        answer = await workflow.execute_activity_method(
            contracts.CustomerPayments.deliver_allocation,
            DeliverAllocation(
                invoice_id=allocation.invoice_id,
                payment_id=allocation.payment_id,
                amount_minor=allocation.amount_minor,
                currency=payment.currency,
                received_at=allocation.value_date or payment.received_at,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=IO_RETRY,
            summary=f"Payment {allocation.payment_id} to invoice {allocation.invoice_id}",
        )
        if answer.refused:
            allocation.refused = answer.refused
            application.credit_minor += allocation.amount_minor
            self.book.open_invoices.pop(allocation.invoice_id, None)
            self.ledger.remember(
                workflow.now(), f"Invoice {allocation.invoice_id} refused {allocation.payment_id} ({answer.refused}): kept as credit"
            )
        else:
            allocation.delivered, allocation.balance_minor = True, answer.balance_minor
