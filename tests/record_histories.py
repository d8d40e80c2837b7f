"""Record the workflow histories that ``test_replay.py`` replays: ``python -m tests.record_histories v3``.

Run it when a release changes the workflow on purpose: it writes ``histories/<release>/``
beside the older releases' folders (it refuses to overwrite one: live invoices may still be
running that code), and the older histories keep replaying thanks to ``workflow.patched()``.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from bench.measure_timeskip import time_skipping_environment
from bench.recording import Recorder, recording_worker, with_pydantic
from client import customers
from tests.harness import make_invoice, start_invoice
from workflows import policy
from workflows.cash import CustomerPayment
from workflows.customer import CustomerWorkflow
from workflows.customer_control import CutsRequest, PauseCustomer
from workflows.digests import DIGEST_GATHERING
from workflows.interest import CurrencyRates, ReferenceRate, half_year_of
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    Allocation,
    DecideLegal,
    DunningPolicy,
    Instalment,
    LastNotice,
    MarkFactored,
    OpenDispute,
    Opening,
    OpeningFee,
    Payment,
    PaymentPlan,
    ResolveDispute,
    StageAction,
    StatutoryInterest,
    customer_workflow_id,
)

HISTORIES = Path(__file__).parent / "histories"


async def _skip_past(env: WorkflowEnvironment, invoice, action: StageAction, paused: timedelta = timedelta(0)) -> None:
    moment = policy.stage_due_at(invoice, invoice.policy.stage(action), paused)
    await env.sleep(moment - await env.get_current_time() + timedelta(minutes=1))


async def _settle(handle: WorkflowHandle) -> None:
    await asyncio.sleep(0.5)  # let the worker finish the activities the last step started
    await handle.query(InvoiceWorkflow.status)


async def written_off_after_every_stage(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    invoice = make_invoice((await env.get_current_time()).date())
    handle = await start_invoice(client, queue, invoice)
    for action in (StageAction.REMINDER, StageAction.SUSPEND, StageAction.LEGAL_REVIEW):
        await _skip_past(env, invoice, action)
        await _settle(handle)
    await handle.signal("payment_received", {"payment_id": "bad", "amount_minor": "lots"})
    await handle.execute_update(InvoiceWorkflow.decide_legal, DecideLegal(decision="write_off"))
    await handle.result()
    return handle


async def paid_while_suspended(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    invoice = make_invoice((await env.get_current_time()).date())
    handle = await start_invoice(client, queue, invoice)
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="part", amount_minor=10_000, currency="EUR"))
    await _skip_past(env, invoice, StageAction.SUSPEND)
    await _settle(handle)
    balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
    await handle.signal("payment_received", Payment(payment_id="rest", amount_minor=balance, currency="EUR"))
    await handle.result()
    return handle


async def paid_while_the_suspension_was_under_way(
    env: WorkflowEnvironment, client: Client, queue: str, recorder: Recorder
) -> WorkflowHandle:
    """The payment lands while the suspend stage waits on its service activity."""
    invoice = make_invoice(
        (await env.get_current_time()).date(), terms={"remote_disconnect_authorized": True, "equipment_ids": ["bmc-1"]}
    )
    handle = await start_invoice(client, queue, invoice)
    held = recorder.hold("suspend_service", when=lambda request: request.invoice_id == invoice.invoice_id)
    suspend_at = policy.stage_due_at(invoice, invoice.policy.stage(StageAction.SUSPEND), timedelta(0))
    await env.sleep(suspend_at - await env.get_current_time() + timedelta(seconds=1))  # time stops while held
    await held.reached.wait()
    balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="all", amount_minor=balance, currency="EUR"))
    held.released.set()
    await handle.result()
    return handle


async def disputed_then_plan_missed(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    invoice = make_invoice((await env.get_current_time()).date(), terms={"early_payment_discount": {"percent": "2", "within_days": 7}})
    handle = await start_invoice(client, queue, invoice)
    await handle.execute_update(InvoiceWorkflow.open_dispute, OpenDispute(reason="rate"))
    await env.sleep(timedelta(days=20))
    await handle.execute_update(InvoiceWorkflow.resolve_dispute, ResolveDispute(outcome="upheld", credit_minor=5_000))
    today = (await env.get_current_time()).date()
    plan = PaymentPlan(instalments=[Instalment(due_date=today + timedelta(days=5), amount_minor=95_000)])
    await handle.execute_update(InvoiceWorkflow.agree_payment_plan, plan)
    await env.sleep(timedelta(days=7))
    await _settle(handle)
    await handle.execute_update(InvoiceWorkflow.resend_invoice)
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="all", amount_minor=95_000, currency="EUR"))
    await handle.result()
    return handle


async def windowed_cut_handed_over_then_factored(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """Sending window with Romanian holidays, equipment (one piece unreachable), agency package, factoring."""
    invoice = make_invoice(
        (await env.get_current_time()).date(),
        time_zone="Europe/Bucharest",
        country="RO",
        policy=DunningPolicy.default(),
        terms={"remote_disconnect_authorized": True, "equipment_ids": ["bmc-1", "sw-unreachable"]},
    )
    handle = await start_invoice(client, queue, invoice)
    for action in (StageAction.WARNING, StageAction.SUSPEND, StageAction.AGENCY):
        await _skip_past(env, invoice, action, timedelta(days=5))
        await _settle(handle)
    await handle.execute_update(InvoiceWorkflow.mark_factored, MarkFactored(factor="factor-1", advance_minor=70_000))
    await handle.result()
    return handle


async def discount_lapsed_then_paid(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """The early-payment discount lapses unused (a fact since v5), then the invoice is paid in full."""
    invoice = make_invoice((await env.get_current_time()).date(), terms={"early_payment_discount": {"percent": "2", "within_days": 3}})
    handle = await start_invoice(client, queue, invoice)
    await env.sleep(timedelta(days=5))
    await _settle(handle)
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="all", amount_minor=100_000, currency="EUR"))
    await handle.result()
    return handle


async def customer_of_two_invoices(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """The customer workflow (since v6): two invoices hold one server; paying the first keeps it cut, the second restores it."""
    terms = {"remote_disconnect_authorized": True, "equipment_ids": ["bmc-1"]}
    today = (await env.get_current_time()).date()
    invoices = [make_invoice(today, terms=terms), make_invoice(today + timedelta(days=1), terms=terms)]
    handles = [await start_invoice(client, queue, invoice) for invoice in invoices]
    await _skip_past(env, invoices[1], StageAction.SUSPEND)
    for handle in handles:
        await _settle(handle)
        balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
        await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="all", amount_minor=balance, currency="EUR"))
        await handle.result()
    return client.get_workflow_handle(customer_workflow_id(invoices[0].customer_id))


async def fee_reversed_by_a_value_date(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """The principal arrived two days after the due date and was booked after the late fee (the value-dates
    patch): the fee is reversed and the invoice closes as paid; the policy pays costs first."""
    invoice = make_invoice((await env.get_current_time()).date(), policy=DunningPolicy.default().model_copy(
        update={"sending_window": None, "allocation": Allocation.COSTS_FIRST}
    ))
    handle = await start_invoice(client, queue, invoice)
    await _skip_past(env, invoice, StageAction.LATE_FEE)
    await _settle(handle)
    arrived = policy.due_moment(invoice) + timedelta(days=2)
    payment = Payment(payment_id="all", amount_minor=100_000, currency="EUR", received_at=arrived)
    await handle.execute_update(InvoiceWorkflow.record_payment, payment)
    await handle.result()
    return handle


async def customer_paid_by_one_transfer(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """Cash application (since v7): one transfer split over two invoices of a customer, the rest its credit,
    which the next invoice takes when it opens."""
    today = (await env.get_current_time()).date()
    invoices = [make_invoice(today + timedelta(days=n), customer_id="CUST-CASH") for n in range(3)]
    for invoice in invoices[:2]:
        await start_invoice(client, queue, invoice)
        await customers.register_invoice(client, queue, invoice)
    received = await env.get_current_time()
    await customers.record_payment(
        client,
        queue,
        CustomerPayment(
            payment_id="TRF-1", customer_id="CUST-CASH", amount_minor=230_000, currency="EUR", received_at=received,
            remittance=f"{invoices[1].invoice_id}",
        ),
    )
    await start_invoice(client, queue, invoices[2])
    await customers.register_invoice(client, queue, invoices[2])
    handle = client.get_workflow_handle(customer_workflow_id("CUST-CASH"))
    while (await handle.query(CustomerWorkflow.cash)).credit():
        await asyncio.sleep(0.1)
    return handle


async def _paused_customer(env: WorkflowEnvironment, client: Client, queue: str) -> tuple[WorkflowHandle, WorkflowHandle]:
    """Ops control (customer-control): a customer excluded from cuts and paused with an until-date; its invoice,
    disputed during the pause, hears of it, then of the pause's end; the dispute upheld, then paid after its cut
    (support and orders only). Returns the invoice's and the customer's handles."""
    terms = {"remote_disconnect_authorized": True, "equipment_ids": ["bmc-1"]}
    today = (await env.get_current_time()).date()
    invoice = make_invoice(today, customer_id="CUST-OPS", terms={**make_invoice(today).terms.model_dump(), **terms})
    handle = await start_invoice(client, queue, invoice)
    await customers.register_invoice(client, queue, invoice)
    await customers.set_cuts(client, queue, CutsRequest(customer_id="CUST-OPS", excluded=True, reason="hospital", requested_by="ops"))
    until = await env.get_current_time() + timedelta(days=10)
    await customers.pause(client, queue, PauseCustomer(customer_id="CUST-OPS", reason="call", requested_by="ops", until=until))
    await env.sleep(timedelta(days=3))
    await handle.execute_update(InvoiceWorkflow.open_dispute, OpenDispute(reason="hours"))
    await env.sleep(timedelta(days=8))  # the until-date passes meanwhile
    await handle.execute_update(InvoiceWorkflow.resolve_dispute, ResolveDispute(outcome="upheld", credit_minor=10_000))
    await _skip_past(env, invoice, StageAction.SUSPEND, paused=timedelta(days=11))
    await _settle(handle)
    balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="all", amount_minor=balance, currency="EUR"))
    await handle.result()
    return handle, client.get_workflow_handle(customer_workflow_id("CUST-OPS"))


async def invoice_paused_by_its_customer(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """The invoice's side of ops control: paused and resumed by its customer's customer_control signals."""
    return (await _paused_customer(env, client, queue))[0]


async def customer_paused_and_excluded_from_cuts(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """The customer's side: the decisions, the until-date's timer, the signals, and a hold left uncut."""
    return (await _paused_customer(env, client, queue))[1]


async def _digest_of_two_invoices(env: WorkflowEnvironment, client: Client, queue: str) -> list[WorkflowHandle]:
    """Two invoices of one customer whose warning and reminder fall due in one sending window: one digest (since
    v7), then both paid."""
    today = (await env.get_current_time()).date()
    invoices = [
        make_invoice(today, due_date=today + timedelta(days=days), policy=DunningPolicy.default()) for days in (1, 5)
    ]
    handles = [await start_invoice(client, queue, invoice) for invoice in invoices]
    warning = policy.stage_due_at(invoices[0], invoices[0].policy.stage(StageAction.WARNING), timedelta(0))
    sent_at = policy.next_sending_moment(invoices[0], warning, frozenset()) + DIGEST_GATHERING
    await env.sleep(sent_at - await env.get_current_time() + timedelta(minutes=1))
    for handle in handles:
        await _settle(handle)
        balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
        await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="all", amount_minor=balance, currency="EUR"))
        await handle.result()
    return handles


async def invoice_in_a_customer_digest(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """The invoice's side of a digest: its notice handed to the customer, the gathering waited out, the answer."""
    return (await _digest_of_two_invoices(env, client, queue))[1]


async def customer_digest_of_two_invoices(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """The customer's side: both invoices' stage notices gathered, one digest sent, lone notices before it."""
    await _digest_of_two_invoices(env, client, queue)
    return client.get_workflow_handle(customer_workflow_id("CUST-1"))


async def interest_paid_after_a_dispute(
    env: WorkflowEnvironment, client: Client, queue: str, recorder: Recorder
) -> WorkflowHandle:
    """Statutory interest (the statutory-interest patch): the rates from the interest_rates activity, posted at
    the late-fee stage, each later stage, a month end and two payments, frozen by a dispute."""
    today = (await env.get_current_time()).date()
    half_years = sorted({half_year_of(today + timedelta(days=d)) for d in range(0, 400, 30)})
    recorder.rates.table = {"EUR": CurrencyRates(compensation_minor=4_000, rates=[
        ReferenceRate(half_year=h, reference_percent=Decimal("2.15"), set_on=today, source="recorded history")
        for h in half_years
    ])}
    invoice = make_invoice(today, policy=DunningPolicy.default().model_copy(
        update={"sending_window": None, "interest": StatutoryInterest()}
    ))
    handle = await start_invoice(client, queue, invoice)
    await _skip_past(env, invoice, StageAction.LATE_FEE)
    await _settle(handle)
    await env.sleep(timedelta(days=35))
    await _settle(handle)
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="part", amount_minor=30_000, currency="EUR"))
    await handle.execute_update(InvoiceWorkflow.open_dispute, OpenDispute(reason="interest disputed"))
    await env.sleep(timedelta(days=5))
    await handle.execute_update(InvoiceWorkflow.resolve_dispute, ResolveDispute(outcome="rejected"))
    balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="rest", amount_minor=balance, currency="EUR"))
    await handle.result()
    return handle


async def backdated_caught_up_then_paid(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """Started 100 days overdue: one ultimatum for every stage and fee due (catch-up), the cut it names, then paid."""
    today = (await env.get_current_time()).date()
    invoice = make_invoice(today, issue_date=today - timedelta(days=114), due_date=today - timedelta(days=100))
    handle = await start_invoice(client, queue, invoice)
    await _settle(handle)
    await env.sleep(DunningPolicy.default().minimum_notice + timedelta(minutes=5))
    await _settle(handle)
    balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="all", amount_minor=balance, currency="EUR"))
    await handle.result()
    return handle


async def imported_at_its_last_notice_then_paid(
    env: WorkflowEnvironment, client: Client, queue: str, _: Recorder
) -> WorkflowHandle:
    """Imported with an opening fee and its late-fee notice sent a day late: the ultimatum counts from it; paid."""
    today = (await env.get_current_time()).date()
    invoice = make_invoice(today, issue_date=today - timedelta(days=26), due_date=today - timedelta(days=12))
    told_at = policy.stage_due_at(invoice, invoice.policy.stage(StageAction.LATE_FEE), timedelta(days=1))
    opening = Opening(
        fees=[OpeningFee(amount_minor=1_500, charged_on=told_at.date())],
        last_notice=LastNotice(stage=StageAction.LATE_FEE, sent_at=told_at),
    )
    handle = await start_invoice(client, queue, invoice, opening=opening)
    await _skip_past(env, invoice, StageAction.ULTIMATUM, paused=timedelta(days=1))
    await _settle(handle)
    balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="all", amount_minor=balance, currency="EUR"))
    await handle.result()
    return handle


SCENARIOS = [
    written_off_after_every_stage,
    paid_while_suspended,
    paid_while_the_suspension_was_under_way,
    disputed_then_plan_missed,
    windowed_cut_handed_over_then_factored,
    discount_lapsed_then_paid,
    customer_of_two_invoices,
    fee_reversed_by_a_value_date,
    invoice_in_a_customer_digest,
    customer_digest_of_two_invoices,
    interest_paid_after_a_dispute,
    customer_paid_by_one_transfer,
    invoice_paused_by_its_customer,
    customer_paused_and_excluded_from_cuts,
    backdated_caught_up_then_paid,
    imported_at_its_last_notice_then_paid,
]


async def main(release: str) -> None:
    folder = HISTORIES / release
    if folder.exists():
        raise SystemExit(f"{folder} exists: histories of a release are never replaced")
    folder.mkdir(parents=True)
    for scenario in SCENARIOS:  # a server each: the invoices of every scenario share one customer workflow
        async with await time_skipping_environment() as env:
            client = with_pydantic(env.client)
            recorder = Recorder(unreachable_equipment={"sw-unreachable"})
            async with recording_worker(client, recorder) as queue:
                handle = await scenario(env, client, queue, recorder)
                history = await handle.fetch_history()
                path = folder / f"{scenario.__name__}.json"
                path.write_text(history.to_json())
                print(f"{path}: {len(history.events)} events")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.record_histories <release, e.g. v3>")
    asyncio.run(main(sys.argv[1]))
