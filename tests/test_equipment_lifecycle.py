"""The equipment lifecycle end to end: the real InvoiceWorkflow on the time-skipping server cuts a
customer's server (sushy-emulator, Redfish) and switch ports (snmpsim) at suspension, through the
real equipment activities, registry, kill switches and Postgres; payment in full brings them back.

Customer A owns a server and two ports, customer B a server and a port; B's equipment must never
change. Every state is read from the peers directly, never through the adapters. Notices, the
service block and public holidays are recording activities (``bench.recording.Recorder``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.equipment.journal import set_kill_switch
from activities.ledger import create_pool
from bench.recording import Recorder, with_pydantic
from tests.equipment_lifecycle_fixtures import (
    CUSTOMER_A,
    DOWN,
    PORTS_PER_SITE,
    POWER_CHANGE_S,
    UP,
    Site,
    equipment_rows,
    events_of,
    finish,
    lifecycle_worker,
    reach_suspension,
    write_site,
)
from tests.equipment_peers import RedfishPeer, SnmpPeer, redfish_peer, snmp_peer
from tests.harness import eventually, make_invoice, start_invoice
from workflows import search_attributes as sa
from workflows.events import RecordedEvent
from workflows.invoice import InvoiceWorkflow
from workflows.models import Invoice, InvoiceState, Payment

SITES = 6  # one per test below


@pytest.fixture(scope="module")
def bmc() -> Iterator[RedfishPeer]:
    with redfish_peer({f"{customer}-{n}": "On" for n in range(SITES) for customer in "ab"}) as peer:
        yield peer


@pytest.fixture(scope="module")
def switch() -> Iterator[SnmpPeer]:
    with snmp_peer({port: UP for port in range(1, PORTS_PER_SITE * SITES + 1)}) as peer:
        yield peer


@pytest.fixture(scope="module")
def site_numbers() -> Iterator[int]:
    return itertools.count()


@pytest.fixture
def site(bmc: RedfishPeer, switch: SnmpPeer, site_numbers: Iterator[int], tmp_path) -> Site:
    """Equipment of this test alone (its own Redfish systems and ports), registered."""
    number = next(site_numbers)
    assert number < SITES, "raise SITES: every test needs its own site"
    return write_site(tmp_path, bmc, switch, number)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url)
    yield pool
    await pool.close()


@pytest.fixture
def client(time_skipping_env: WorkflowEnvironment) -> Client:
    return with_pydantic(time_skipping_env.client)


class Peers:
    """The equipment's state, read from the emulator and the agent with their own requests."""

    def __init__(self, bmc: RedfishPeer, switch: SnmpPeer, site: Site) -> None:
        self.bmc, self.switch, self.site = bmc, switch, site

    async def read(self) -> dict[str, object]:
        """Power state of both servers and ifAdminStatus of every port, by registry id."""
        site = self.site
        statuses = await self.switch.admin_status(*site.if_index.values())
        return {
            site.server_a: self.bmc.power_state(site.system_a),
            site.server_b: self.bmc.power_state(site.system_b),
            **{equipment_id: statuses[index] for equipment_id, index in site.if_index.items()},
        }

    def untouched(self) -> dict[str, object]:
        """What the peers read before any test acted on this site."""
        site = self.site
        return {site.server_a: "On", site.server_b: "On", **{equipment_id: UP for equipment_id in site.if_index}}

    def resets_of_a(self) -> list[str]:
        return self.bmc.resets_received(self.site.system_a)

    def b_never_reset(self) -> bool:
        return self.bmc.resets_received(self.site.system_b) == []


@pytest.fixture
def peers(bmc: RedfishPeer, switch: SnmpPeer, site: Site) -> Peers:
    return Peers(bmc, switch, site)


async def begin(
    env: WorkflowEnvironment,
    client: Client,
    queue: str,
    recorder: Recorder,
    equipment_ids: list[str],
    authorized: bool = True,
) -> tuple[Invoice, WorkflowHandle]:
    today = (await env.get_current_time()).date()
    invoice = make_invoice(
        today,
        customer_id=CUSTOMER_A,
        terms={"remote_disconnect_authorized": authorized, "equipment_ids": equipment_ids},
    )
    handle = await start_invoice(client, queue, invoice)
    await eventually(lambda: "invoice_issued" in recorder.notice_kinds(invoice.invoice_id))
    return invoice, handle


async def pay_in_full(handle: WorkflowHandle) -> None:
    due = (await handle.query(InvoiceWorkflow.status)).balance_minor
    payment = Payment(payment_id="full", amount_minor=due, currency="EUR")
    assert await handle.execute_update(InvoiceWorkflow.record_payment, payment) == 0


async def failed_equipment(handle: WorkflowHandle) -> list[str] | None:
    """The ``FailedEquipment`` search attribute as the server holds it."""
    return (await handle.describe()).typed_search_attributes.get(sa.FAILED_EQUIPMENT)


async def failed_equipment_published(handle: WorkflowHandle, expected: list[str]) -> None:
    """Wait until the workflow has published ``expected`` as its ``FailedEquipment``."""

    async def published() -> bool:
        return await failed_equipment(handle) == expected

    await eventually(published)


def by_id(events: list[RecordedEvent]) -> dict[str, dict]:
    return {e.data["equipment_id"]: e.data for e in events}


def rows_by(rows: list[dict], action: str) -> dict[str, dict]:
    return {r["equipment_id"]: r for r in rows if r["action"] == action}


# --- the whole lifecycle ------------------------------------------------------------------


async def test_suspension_cuts_only_the_customers_equipment_and_payment_brings_it_back(
    time_skipping_env, client, pool, site, peers
):
    env, recorder = time_skipping_env, Recorder()
    assert await peers.read() == peers.untouched()
    async with lifecycle_worker(client, pool, site.registry_file, recorder) as queue:
        invoice, handle = await begin(env, client, queue, recorder, site.equipment_a)
        await reach_suspension(env, pool, invoice)

        cut = {site.server_a: "Off", site.port_a1: DOWN, site.port_a2: DOWN}
        assert await peers.read() == {**peers.untouched(), **cut}
        assert peers.resets_of_a() == ["GracefulShutdown"]
        assert peers.b_never_reset()
        workflow = f"workflow customer-{CUSTOMER_A} for invoice {invoice.invoice_id}"  # the customer acts for it
        suspended = rows_by(await equipment_rows(pool), "suspend")
        assert set(suspended) == set(site.equipment_a)  # nothing of B's was even asked for
        for equipment_id, state in [(site.server_a, "Off"), (site.port_a1, "down"), (site.port_a2, "down")]:
            row = suspended[equipment_id]
            assert (row["outcome"], row["state_read_back"], row["dry_run"]) == ("changed", state, False)
            assert (row["customer_id"], row["invoice_id"]) == (CUSTOMER_A, invoice.invoice_id)
            assert (row["requested_by"], row["reason"]) == (workflow, f"invoices {invoice.invoice_id} unpaid")
        stored = by_id(await events_of(pool, invoice.invoice_id, "equipment_suspended"))
        assert stored == {
            site.server_a: {"equipment_id": site.server_a, "state": "Off", "changed": True, "dry_run": False},
            site.port_a1: {"equipment_id": site.port_a1, "state": "down", "changed": True, "dry_run": False},
            site.port_a2: {"equipment_id": site.port_a2, "state": "down", "changed": True, "dry_run": False},
        }
        assert await events_of(pool, invoice.invoice_id, "suspend_failed") == []
        assert not await failed_equipment(handle)

        await pay_in_full(handle)
        outcome = await finish(handle)

    assert outcome.state == InvoiceState.PAID
    assert await peers.read() == peers.untouched()
    assert peers.resets_of_a() == ["GracefulShutdown", "On"]
    assert peers.b_never_reset()
    restored = rows_by(await equipment_rows(pool), "restore")
    assert {k: (r["outcome"], r["state_read_back"]) for k, r in restored.items()} == {
        site.server_a: ("changed", "On"),
        site.port_a1: ("changed", "up"),
        site.port_a2: ("changed", "up"),
    }
    assert {(r["requested_by"], r["reason"]) for r in restored.values()} == {
        (f"workflow customer-{CUSTOMER_A} for invoice {invoice.invoice_id}", "no invoice holds it any more")
    }
    assert len(await equipment_rows(pool)) == 6
    assert {
        k: (e["state"], e["changed"])
        for k, e in by_id(await events_of(pool, invoice.invoice_id, "equipment_restored")).items()
    } == {site.server_a: ("On", True), site.port_a1: ("up", True), site.port_a2: ("up", True)}
    # the equipment comes back before the block on support and orders lifts
    tail = [
        e.kind.value
        for e in await events_of(pool, invoice.invoice_id, "invoice_closed", "equipment_restored", "service_restored")
    ]
    assert tail == ["invoice_closed", *["equipment_restored"] * 3, "service_restored"]
    assert [verb for verb, _ in recorder.service_calls] == ["suspend", "restore"]


async def test_what_the_customer_had_switched_off_stays_off_after_payment(time_skipping_env, client, pool, site, peers):
    env, recorder = time_skipping_env, Recorder()
    peers.bmc.reset(site.system_a, "ForceOff")
    await peers.switch.set_admin_status(site.if_index[site.port_a2], DOWN)
    await eventually(lambda: peers.bmc.power_state(site.system_a) == "Off", timeout=POWER_CHANGE_S)
    owner_had = {**peers.untouched(), site.server_a: "Off", site.port_a2: DOWN}
    assert await peers.read() == owner_had
    async with lifecycle_worker(client, pool, site.registry_file, recorder) as queue:
        invoice, handle = await begin(env, client, queue, recorder, site.equipment_a)
        await reach_suspension(env, pool, invoice)
        assert await peers.read() == {**owner_had, site.port_a1: DOWN}
        await pay_in_full(handle)
        await finish(handle)

    assert await peers.read() == owner_had
    assert peers.resets_of_a() == ["ForceOff"]  # the owner's; the service sent no reset
    restored = rows_by(await equipment_rows(pool), "restore")
    assert {k: (r["outcome"], r["state_read_back"]) for k, r in restored.items()} == {
        site.server_a: ("unchanged", "Off"),
        site.port_a1: ("changed", "up"),
        site.port_a2: ("unchanged", "down"),
    }


# --- refusals, each through the workflow ---------------------------------------------------


async def test_unknown_and_other_customers_equipment_is_refused_while_the_rest_is_cut(
    time_skipping_env, client, pool, site, peers
):
    env, recorder = time_skipping_env, Recorder()
    refused = {
        "no-such-box": "is not in the registry",
        site.server_b: "does not belong to customer 'CUST-A'",
        site.port_b: "does not belong to customer 'CUST-A'",
    }
    async with lifecycle_worker(client, pool, site.registry_file, recorder) as queue:
        invoice, handle = await begin(env, client, queue, recorder, [site.port_a1, *refused])
        await reach_suspension(env, pool, invoice)

        assert await peers.read() == {**peers.untouched(), site.port_a1: DOWN}
        assert peers.b_never_reset() and peers.resets_of_a() == []
        failures = by_id(await events_of(pool, invoice.invoice_id, "suspend_failed"))
        assert set(failures) == set(refused)
        for equipment_id, why in refused.items():
            assert why in failures[equipment_id]["error"], failures[equipment_id]
        assert set(by_id(await events_of(pool, invoice.invoice_id, "equipment_suspended"))) == {site.port_a1}
        await failed_equipment_published(handle, sorted(refused))
        rows = await equipment_rows(pool)
        assert {r["equipment_id"]: r["outcome"] for r in rows} == {
            site.port_a1: "changed",
            **{equipment_id: "refused" for equipment_id in refused},
        }
        assert all(r["customer_id"] == CUSTOMER_A and r["action"] == "suspend" for r in rows)

        await pay_in_full(handle)
        await finish(handle)

    # only what was cut is restored; nothing is asked of the refused ids
    assert await peers.read() == peers.untouched()
    assert [(r["equipment_id"], r["outcome"]) for r in rows_by(await equipment_rows(pool), "restore").values()] == [
        (site.port_a1, "changed")
    ]
    assert await events_of(pool, invoice.invoice_id, "restore_failed") == []


async def test_without_authorisation_in_the_contract_no_equipment_is_contacted(
    time_skipping_env, client, pool, site, peers
):
    env, recorder = time_skipping_env, Recorder()
    async with lifecycle_worker(client, pool, site.registry_file, recorder) as queue:
        invoice, handle = await begin(env, client, queue, recorder, site.equipment_a, authorized=False)
        await reach_suspension(env, pool, invoice)
        assert [verb for verb, _ in recorder.service_calls] == ["suspend"]  # support and orders still blocked
        assert recorder.service_calls[0][1].remote_disconnect_authorized is False
        await pay_in_full(handle)
        await finish(handle)

    assert await equipment_rows(pool) == []
    assert await peers.read() == peers.untouched()
    assert peers.resets_of_a() == [] and peers.b_never_reset()
    equipment_kinds = ("equipment_suspended", "suspend_failed", "equipment_restored", "restore_failed")
    assert await events_of(pool, invoice.invoice_id, *equipment_kinds) == []


@pytest.mark.parametrize(
    ("switch_on", "why"),
    [("global", "global kill switch is on"), (CUSTOMER_A, "set by ops:ana")],
    ids=["global-setting", "customer-switch-row"],
)
async def test_a_kill_switch_refuses_every_cut_and_payment_then_restores_nothing(
    time_skipping_env, client, pool, site, peers, switch_on: str, why: str
):
    env, recorder = time_skipping_env, Recorder()
    global_kill_switch = switch_on == "global"  # the setting DUNNING_EQUIPMENT_KILL_SWITCH
    if not global_kill_switch:
        await set_kill_switch(pool, switch_on, reason="customer disputes the cut", set_by="ops:ana")
    async with lifecycle_worker(client, pool, site.registry_file, recorder, global_kill_switch) as queue:
        invoice, handle = await begin(env, client, queue, recorder, site.equipment_a)
        await reach_suspension(env, pool, invoice)

        assert await peers.read() == peers.untouched()
        failures = by_id(await events_of(pool, invoice.invoice_id, "suspend_failed"))
        assert set(failures) == set(site.equipment_a)
        assert all(why in failure["error"] for failure in failures.values()), failures
        await failed_equipment_published(handle, sorted(site.equipment_a))
        assert {(r["equipment_id"], r["outcome"]) for r in await equipment_rows(pool)} == {
            (equipment_id, "kill_switch") for equipment_id in site.equipment_a
        }

        await pay_in_full(handle)
        await finish(handle)

    assert await peers.read() == peers.untouched()
    assert peers.resets_of_a() == [] and peers.b_never_reset()
    assert [r["action"] for r in await equipment_rows(pool)] == ["suspend"] * 3  # no restore was attempted
    assert await events_of(pool, invoice.invoice_id, "equipment_restored", "restore_failed") == []
    assert [verb for verb, _ in recorder.service_calls] == ["suspend", "restore"]
