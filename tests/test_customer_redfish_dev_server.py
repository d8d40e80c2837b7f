"""Two invoices of one customer name the same server: on the dev server, against the real Redfish emulator
(sushy-emulator), the customer workflow cuts it once and restores it once, after the second payment.

Real time drives the invoices: their policy suspends 2 s after a due moment 3 s away (the ultimatum the
cut needs goes out then, with a one-second notice). Notices and
the service block are recording activities; the equipment and ledger activities and Postgres are real.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.ledger import create_pool
from bench.recording import Recorder, with_pydantic
from tests.cli_helpers import cli_env, dunning, succeeded
from tests.equipment_lifecycle_fixtures import POWER_CHANGE_S, equipment_rows, events_of, lifecycle_worker
from tests.equipment_peers import RedfishPeer, redfish_peer, write_secret
from tests.harness import eventually, make_invoice, start_invoice
from workflows.invoice import InvoiceWorkflow
from workflows.models import Invoice, InvoiceState, Payment

SYSTEM = "shared-1"


@pytest.fixture(scope="module")
def bmc() -> Iterator[RedfishPeer]:
    with redfish_peer({SYSTEM: "On"}) as peer:
        yield peer


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url)
    yield pool
    await pool.close()


@pytest.fixture
def client(dev_env: WorkflowEnvironment) -> Client:
    return with_pydantic(dev_env.client)


def registry(folder: Path, bmc: RedfishPeer, customer_id: str) -> Path:
    """The customer's one server, as the equipment registry names it (``srv-shared``)."""
    password = write_secret(folder, "bmc-password", bmc.password)
    entry = {
        "id": "srv-shared",
        "customer_id": customer_id,
        "kind": "redfish",
        "endpoint": bmc.url,
        "username": bmc.username,
        "auth": "basic",
        "system_path": bmc.system_path(SYSTEM),
        "graceful_timeout_s": POWER_CHANGE_S,
        "power_timeout_s": POWER_CHANGE_S,
        "poll_interval_s": 0.2,
        "ca_file": str(bmc.ca_file),
    }
    lines = ["[[equipment]]", *(f"{k} = {json.dumps(v)}" for k, v in entry.items())]
    lines.append(f"credentials = {{ file = {json.dumps(str(password))} }}")
    path = folder / "equipment.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def soon_suspended(customer_id: str) -> Invoice:
    """An invoice of ``customer_id`` due in 3 s whose only stage suspends 2 s later, cutting the shared server."""
    due = datetime.now(timezone.utc) + timedelta(seconds=3)
    return make_invoice(
        due.date(),
        customer_id=customer_id,
        due_date=due.date(),
        terms={"remote_disconnect_authorized": True, "equipment_ids": ["srv-shared"]},
        policy={"stages": [{"action": "suspend", "offset": "PT2S"}], "due_time": due.time().isoformat(), "sending_window": None},
    )


async def pay_in_full(handle: WorkflowHandle) -> None:
    balance = (await handle.query(InvoiceWorkflow.status)).balance_minor
    await handle.execute_update(InvoiceWorkflow.record_payment, Payment(payment_id="BT-1", amount_minor=balance, currency="EUR"))
    assert (await asyncio.wait_for(handle.result(), 2 * POWER_CHANGE_S + 10)).state == InvoiceState.PAID


async def test_paying_one_of_two_invoices_keeps_the_shared_server_off_and_the_second_restores_it_once(
    dev_env, client, pool, bmc, tmp_path
):
    customer_id = f"CUST-{uuid.uuid4().hex[:8]}"
    recorder = Recorder()
    async with lifecycle_worker(client, pool, registry(tmp_path, bmc, customer_id), recorder) as queue:
        first, second = soon_suspended(customer_id), soon_suspended(customer_id)
        # the cut waits for a delivered ultimatum: a one-second notice (a start input only) keeps it short
        first_handle, second_handle = [
            await start_invoice(client, queue, i, minimum_notice=timedelta(seconds=1)) for i in (first, second)
        ]

        async def both_recorded_the_cut() -> bool:
            return all([await events_of(pool, i.invoice_id, "equipment_suspended") for i in (first, second)])

        await eventually(both_recorded_the_cut, timeout=2 * POWER_CHANGE_S + 20)
        assert bmc.power_state(SYSTEM) == "Off"
        assert bmc.resets_received(SYSTEM) == ["GracefulShutdown"]
        shown = succeeded(await dunning(cli_env(dev_env, queue), "customer", "holds", customer_id))
        assert f"equipment:srv-shared: cut, held by {first.invoice_id}, {second.invoice_id}" in shown.splitlines() or (
            f"equipment:srv-shared: cut, held by {second.invoice_id}, {first.invoice_id}" in shown.splitlines()
        )

        await pay_in_full(first_handle)
        assert bmc.power_state(SYSTEM) == "Off"  # the second invoice still holds it
        assert bmc.resets_received(SYSTEM) == ["GracefulShutdown"]
        assert await events_of(pool, first.invoice_id, "equipment_restored") == []

        await pay_in_full(second_handle)
        assert bmc.power_state(SYSTEM) == "On"
        assert bmc.resets_received(SYSTEM) == ["GracefulShutdown", "On"]
        rows = await equipment_rows(pool)
        assert [(r["action"], r["outcome"], r["state_read_back"]) for r in rows] == [
            ("suspend", "changed", "Off"),
            ("restore", "changed", "On"),
        ]
        restored = await events_of(pool, second.invoice_id, "equipment_restored")
        assert [(e.data["state"], e.data["changed"]) for e in restored] == [("On", True)]
