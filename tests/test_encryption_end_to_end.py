"""Encryption end to end: the real invoice workflow runs on the dev server with the encrypting data
converter, and the history Temporal stores holds no customer name, e-mail or amount in clear.

Search attributes are the exception by design (ops filter on customer and amount); the test checks
that they are the only place those values appear.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timezone

import pytest
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from bench.recording import Recorder, recording_worker
from client import invoices
from client.codec import ENCODING, AesGcmCodec, with_encryption
from tests.harness import eventually, make_invoice
from workflows.models import Invoice, Payment, format_money

NAME, EMAIL = "Ilinca Zamfirescu-Vlad", "ilinca.zv@codec-test.example"
CUSTOMER_ID = "CUST-ZV-4471"
AMOUNT, PAID = 7_654_321, 1_234_567
SECRETS = [NAME, EMAIL, str(AMOUNT), format_money(AMOUNT, "EUR"), str(PAID), str(AMOUNT - PAID)]
SEARCH_ATTRIBUTE_FIELDS = {
    "workflow_execution_started_event_attributes",
    "upsert_workflow_search_attributes_event_attributes",
    "workflow_execution_continued_as_new_event_attributes",
}


@pytest.fixture(scope="module")
async def encrypted_client(dev_env: WorkflowEnvironment) -> Client:
    """A client on the dev server whose data converter encrypts, as the service's does with keys set."""
    codec = AesGcmCodec({"k2": os.urandom(32), "k1": os.urandom(32)}, "k2")
    return Client(**{**dev_env.client.config(), "data_converter": with_encryption(pydantic_data_converter, codec)})


@pytest.fixture(scope="module")
async def invoice(encrypted_client: Client) -> AsyncIterator[Invoice]:
    """An invoice for a distinctive customer, started, notified and partly paid through the encrypting client."""
    recorder = Recorder()
    invoice = make_invoice(
        date.today(), customer_id=CUSTOMER_ID, contact={"name": NAME, "email": EMAIL}, amount_minor=AMOUNT
    )
    async with recording_worker(encrypted_client, recorder) as queue:
        await invoices.start_invoice(encrypted_client, queue, invoice)
        await eventually(lambda: recorder.notice_kinds(invoice.invoice_id) == ["invoice_issued"])
        payment = Payment(payment_id="PAY-ZV-1", amount_minor=PAID, currency="EUR", received_at=datetime.now(timezone.utc))
        assert await invoices.record_payment(encrypted_client, invoice.invoice_id, payment) == AMOUNT - PAID
        await eventually(lambda: "payment_recorded" in recorder.event_kinds(invoice.invoice_id))
        assert recorder.notices[0].to_email == EMAIL  # the activity got the clear value
        yield invoice
        await invoices.invoice_handle(encrypted_client, invoice.invoice_id).terminate("test over")


@pytest.fixture(scope="module")
async def raw_history(dev_env: WorkflowEnvironment, invoice: Invoice) -> WorkflowHistory:
    """The history as stored, fetched by a client without the codec."""
    return await dev_env.client.get_workflow_handle(invoice.workflow_id).fetch_history()


def without_search_attributes(event: HistoryEvent) -> HistoryEvent:
    bare = HistoryEvent()
    bare.CopyFrom(event)
    for field in SEARCH_ATTRIBUTE_FIELDS:
        if bare.HasField(field):
            getattr(bare, field).ClearField("search_attributes")
    return bare


def clear_text_in(event: HistoryEvent, texts: list[str]) -> Iterator[str]:
    stored = event.SerializeToString()
    return (text for text in texts if text.encode() in stored)


async def test_the_workflow_still_runs_and_answers_queries(encrypted_client: Client, invoice: Invoice) -> None:
    status = await invoices.status(encrypted_client, invoice.invoice_id)

    assert (status.amount_minor, status.paid_minor, status.balance_minor) == (AMOUNT, PAID, AMOUNT - PAID)
    assert status.customer_id == CUSTOMER_ID


async def test_stored_history_holds_no_name_email_or_amount(raw_history: WorkflowHistory) -> None:
    leaks = {
        f"{event.event_id} {event.WhichOneof('attributes')}": found
        for event in raw_history.events
        if (found := list(clear_text_in(without_search_attributes(event), [*SECRETS, CUSTOMER_ID])))
    }

    assert leaks == {}
    assert len(raw_history.events) > 10  # started, activities, the update: enough to have leaked


async def test_search_attributes_are_the_only_clear_values_by_design(raw_history: WorkflowHistory) -> None:
    started = raw_history.events[0].workflow_execution_started_event_attributes
    visible = {key: payload.data.decode() for key, payload in started.search_attributes.indexed_fields.items()}

    assert visible["CustomerId"] == f'"{CUSTOMER_ID}"' and visible["AmountDue"] == str(AMOUNT)
    assert not list(clear_text_in(raw_history.events[0], [NAME, EMAIL]))


async def test_summary_and_details_are_encrypted_and_read_back_with_the_key(
    encrypted_client: Client, invoice: Invoice, raw_history: WorkflowHistory
) -> None:
    metadata = raw_history.events[0].user_metadata
    description = await encrypted_client.get_workflow_handle(invoice.workflow_id).describe()

    assert metadata.summary.metadata["encoding"] == ENCODING and metadata.details.metadata["encoding"] == ENCODING
    assert await description.static_summary() == invoices.invoice_summary(invoice)
    assert EMAIL in (await description.static_details() or "")
