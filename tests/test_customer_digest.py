"""Notices per customer on the time-skipping server: stage notices of one customer's invoices that fall due in the same
sending window go out as one digest; a lone one goes out as its invoice built it; receipts never wait."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from activities.notices.digest import render_digest
from bench.recording import Recorder
from tests.harness import eventually, make_invoice, start_invoice
from tests.notice_servers import PAYEE
from workflows import policy
from workflows.customer import CustomerWorkflow
from workflows.digests import DIGEST_GATHERING, CustomerNoticeOutcome, NoticeAsked
from workflows.holds import CustomerWorkflowInput
from workflows.invoice import InvoiceWorkflow
from workflows.models import DunningPolicy, Invoice, NoticeKind, Payment, StageAction, customer_workflow_id

WINDOWED = DunningPolicy.default()  # business hours: stage notices go through the customer


@pytest.fixture
def customer_id() -> str:
    return f"CUST-{uuid.uuid4().hex[:8]}"


async def invoices(env: WorkflowEnvironment, client: Client, queue: str, customer_id: str, *due_in_days: int) -> list:
    today = (await env.get_current_time()).date()
    started = []
    for days in due_in_days:
        invoice = make_invoice(today, customer_id=customer_id, due_date=today + timedelta(days=days), policy=WINDOWED)
        started.append((invoice, await start_invoice(client, queue, invoice)))
    return started


async def skip_to_notice(env: WorkflowEnvironment, invoice: Invoice, action: StageAction) -> None:
    """Past the stage's moment in the sending window and the customer's gathering delay."""
    nominal = policy.stage_due_at(invoice, invoice.policy.stage(action), timedelta(0))
    sent_at = policy.next_sending_moment(invoice, nominal, frozenset()) + DIGEST_GATHERING
    await env.sleep(sent_at - await env.get_current_time() + timedelta(seconds=30))


def sent(recorder: Recorder, invoice: Invoice, kind: str) -> list[dict]:
    return [e.data for e in recorder.events_of(invoice.invoice_id, "notice_sent") if e.data["kind"] == kind]


async def test_two_invoices_in_one_window_get_one_digest_in_the_tone_of_the_strongest_stage(env, client, queue, recorder, customer_id):
    (a, handle_a), (b, handle_b) = await invoices(env, client, queue, customer_id, 1, 5)
    # a's warning (due +5 days) and b's reminder (+1 day) fall due at the same moment
    assert policy.stage_due_at(a, a.policy.stage(StageAction.WARNING), timedelta(0)) == policy.stage_due_at(
        b, b.policy.stage(StageAction.REMINDER), timedelta(0)
    )
    await skip_to_notice(env, a, StageAction.WARNING)
    await eventually(lambda: sent(recorder, a, "warning") and sent(recorder, b, "reminder"))

    [digest] = recorder.digests
    assert digest.customer_id == customer_id
    assert [(n.invoice_id, n.kind) for n in digest.notices] in (
        [(a.invoice_id, NoticeKind.WARNING), (b.invoice_id, NoticeKind.REMINDER)],
        [(b.invoice_id, NoticeKind.REMINDER), (a.invoice_id, NoticeKind.WARNING)],
    )
    assert digest.strongest == NoticeKind.WARNING
    assert digest.idempotency_key.startswith(f"{customer_workflow_id(customer_id)}/") and digest.idempotency_key.endswith("/digest-1")
    rendered = render_digest(digest, [], PAYEE)
    assert rendered.subject == "Payment overdue: several invoices"  # the warning's tone, not the reminder's
    assert a.invoice_id in rendered.text and b.invoice_id in rendered.text
    # neither went out on its own; a's earlier reminder, alone in its window, did, under a's own key
    assert recorder.notice_kinds(a.invoice_id) == ["invoice_issued", "reminder"]
    assert recorder.notice_kinds(b.invoice_id) == ["invoice_issued"]
    assert "digest" not in sent(recorder, a, "reminder")[0]
    # each invoice's event log says which notice reached the client, and in which digest
    for invoice, kind in ((a, "warning"), (b, "reminder")):
        [event] = sent(recorder, invoice, kind)
        assert event["digest"] == digest.idempotency_key and event["channels"] == ["email"]
    story = [line.what for line in (await handle_b.query(InvoiceWorkflow.status)).actions]
    assert f"Reminder notice sent in digest 1 of customer {customer_id}, with invoice {a.invoice_id}" in story
    customer = client.get_workflow_handle(customer_workflow_id(customer_id))
    customer_story = [line.what for line in (await customer.query(CustomerWorkflow.holds)).story]
    assert any(line.startswith("Digest 1 (warning) sent for invoices") for line in customer_story)


async def test_a_retried_request_gets_the_same_answer_and_sends_nothing_again(env, client, queue, recorder, customer_id):
    (a, _), (b, _) = await invoices(env, client, queue, customer_id, 1, 5)
    await skip_to_notice(env, a, StageAction.WARNING)
    await eventually(lambda: sent(recorder, a, "warning") and sent(recorder, b, "reminder"))
    [digest] = recorder.digests
    attempts, notices = recorder.digest_attempts, len(recorder.notices)
    # the invoice's activity retried after a crash: the same update id, or a new one with the same key
    for update_id in (f"{digest.notices[0].idempotency_key}/sent", f"retry-{uuid.uuid4().hex[:6]}"):
        answer = await client.execute_update_with_start_workflow(
            CustomerWorkflow.stage_notice_sent,
            NoticeAsked(customer_id=customer_id, idempotency_key=digest.notices[0].idempotency_key),
            start_workflow_operation=WithStartWorkflowOperation(
                CustomerWorkflow.run,
                CustomerWorkflowInput(customer_id=customer_id),
                id=customer_workflow_id(customer_id),
                task_queue=queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            ),
            id=update_id,
        )
        assert isinstance(answer, CustomerNoticeOutcome)
        assert (answer.digest, answer.digest_key) == (1, digest.idempotency_key)
    assert (recorder.digest_attempts, len(recorder.notices), len(recorder.digests)) == (attempts, notices, 1)


async def test_a_lone_invoice_gets_its_own_notice(env, client, queue, recorder, customer_id):
    [(invoice, _)] = await invoices(env, client, queue, customer_id, 1)
    await skip_to_notice(env, invoice, StageAction.REMINDER)
    await eventually(lambda: sent(recorder, invoice, "reminder"))
    [reminder] = [n for n in recorder.notices if n.kind == NoticeKind.REMINDER]
    assert reminder.idempotency_key == f"{invoice.workflow_id}/0002-reminder"  # as the invoice sent it before
    assert "digest" not in sent(recorder, invoice, "reminder")[0]
    assert recorder.digests == []


async def test_receipts_go_out_at_once_not_in_a_digest(env, client, queue, recorder, customer_id):
    (a, handle_a), (b, handle_b) = await invoices(env, client, queue, customer_id, 1, 1)
    await eventually(lambda: len(recorder.notices) == 2)  # the two invoices
    for handle, payment_id in ((handle_a, "pay-a"), (handle_b, "pay-b")):
        await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id=payment_id, amount_minor=10_000, currency="EUR"))
    # no time passes: a receipt does not wait for any gathering
    await eventually(lambda: len(recorder.notices) == 4, timeout=5)
    receipts = {n.invoice_id: n.detail for n in recorder.notices if n.kind == NoticeKind.RECEIPT}
    assert receipts == {a.invoice_id: "pay-a", b.invoice_id: "pay-b"}
    assert recorder.digests == []
    await eventually(lambda: sent(recorder, a, "receipt"))  # recorded once the invoice appended its events
    assert "digest" not in sent(recorder, a, "receipt")[0]
