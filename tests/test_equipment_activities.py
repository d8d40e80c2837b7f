"""The equipment activities on a real Postgres, against the loopback controller, SNMP agent and BMC:
refusals, kill switches, dry run, heartbeats, idempotency, the record of every action, and restores
that put back only what the cut changed."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.equipment.activities import EquipmentActivities
from activities.equipment.adapter import EquipmentUnreachable
from activities.equipment.journal import clear_kill_switch, remember_state_before_cut, set_kill_switch
from activities.equipment.registry import (
    CredentialRef,
    Equipment,
    RedfishEquipment,
    Registry,
    SnmpEquipment,
    WebhookEquipment,
)
from activities.equipment.snmp import SnmpAdapter
from activities.ledger import create_pool
from tests.equipment_peers import (
    ControllerPeer,
    RedfishPeer,
    SnmpPeer,
    controller_peer,
    free_port,
    redfish_peer,
    snmp_peer,
    write_secret,
)
from workflows.models import EquipmentRequest, EquipmentResult

UP, DOWN = 1, 2


@pytest.fixture(scope="module")
def controller() -> Iterator[ControllerPeer]:
    with controller_peer() as peer:
        yield peer


@pytest.fixture(scope="module")
def agent() -> Iterator[SnmpPeer]:
    # 7, 8: cut and restored; 9-10, 11-12: one port up and one down before the cut
    with snmp_peer({1: UP, 7: UP, 8: UP, 9: UP, 10: DOWN, 11: UP, 12: DOWN}) as peer:
        yield peer


@pytest.fixture(scope="module")
def bmc() -> Iterator[RedfishPeer]:
    with redfish_peer({"switched-off": "Off"}) as peer:
        yield peer


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("secrets")


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url)
    yield pool
    await pool.close()


def firewall(
    controller: ControllerPeer, secrets: Path, equipment_id: str, customer_id: str = "CUST-1"
) -> WebhookEquipment:
    return WebhookEquipment(
        id=equipment_id,
        customer_id=customer_id,
        kind="webhook",
        endpoint=controller.url,
        credentials=CredentialRef(file=write_secret(secrets, "webhook", controller.secret)),
        request_timeout_s=2,
    )


def switch(
    agent: SnmpPeer, secrets: Path, equipment_id: str = "sw-1", ports: tuple[int, ...] = (7, 8)
) -> SnmpEquipment:
    return SnmpEquipment(
        id=equipment_id,
        customer_id="CUST-1",
        kind="snmp",
        endpoint=agent.endpoint,
        ports=list(ports),
        version="2c",
        credentials=CredentialRef(file=write_secret(secrets, "community", agent.community)),
        request_timeout_s=0.5,
        retries=1,
    )


def server(bmc: RedfishPeer, secrets: Path, system: str) -> RedfishEquipment:
    return RedfishEquipment(
        id=f"bmc-{system}",
        customer_id="CUST-1",
        kind="redfish",
        endpoint=bmc.url,
        username=bmc.username,
        credentials=CredentialRef(file=write_secret(secrets, "bmc-password", bmc.password)),
        auth="basic",
        system_path=bmc.system_path(system),
        ca_file=bmc.ca_file,
    )


def request(equipment_id: str, step: str = "suspend", customer_id: str = "CUST-1") -> EquipmentRequest:
    return EquipmentRequest(
        idempotency_key=f"invoice-INV-1/{step}/{equipment_id}",
        equipment_id=equipment_id,
        customer_id=customer_id,
        invoice_id="INV-1",
        reason="unpaid 20 days after the due date",
        requested_by="invoice-INV-1",
    )


def activities(pool: asyncpg.Pool, *equipment: Equipment, **safety: bool) -> EquipmentActivities:
    return EquipmentActivities(Registry(equipment), pool, **safety)


async def run(acts: EquipmentActivities, action: str, request: EquipmentRequest) -> EquipmentResult:
    method = acts.suspend_equipment if action == "suspend" else acts.restore_equipment
    return await ActivityEnvironment().run(method, request)


async def refusal(acts: EquipmentActivities, action: str, request: EquipmentRequest) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await run(acts, action, request)
    assert caught.value.non_retryable
    return caught.value


async def recorded(pool: asyncpg.Pool, equipment_id: str) -> list[dict]:
    rows = await pool.fetch(
        "SELECT idempotency_key, customer_id, invoice_id, action, requested_by, reason, outcome, state_read_back,"
        " dry_run, detail FROM equipment_actions WHERE equipment_id = $1 ORDER BY id",
        equipment_id,
    )
    return [dict(row) for row in rows]


async def test_suspend_and_restore_act_on_the_peer_and_are_recorded_with_who_and_why(pool, agent, secrets):
    acts = activities(pool, switch(agent, secrets))

    cut = await run(acts, "suspend", request("sw-1"))
    assert cut == EquipmentResult(equipment_id="sw-1", action="suspend", changed=True, state="down")
    assert await agent.admin_status(1, 7, 8) == {1: UP, 7: DOWN, 8: DOWN}

    back = await run(acts, "restore", request("sw-1", "restore"))
    assert back == EquipmentResult(equipment_id="sw-1", action="restore", changed=True, state="up")
    assert await agent.admin_status(1, 7, 8) == {1: UP, 7: UP, 8: UP}

    rows = await recorded(pool, "sw-1")
    assert [(r["action"], r["outcome"], r["state_read_back"], r["dry_run"]) for r in rows] == [
        ("suspend", "changed", "down", False),
        ("restore", "changed", "up", False),
    ]
    assert {(r["customer_id"], r["invoice_id"], r["requested_by"], r["reason"]) for r in rows} == {
        ("CUST-1", "INV-1", "invoice-INV-1", "unpaid 20 days after the due date")
    }


async def test_a_retry_returns_the_recorded_result_without_contacting_the_peer(pool, controller, secrets):
    acts = activities(pool, firewall(controller, secrets, "fw-retry"))
    first = await run(acts, "suspend", request("fw-retry"))
    calls = len(controller.calls_to("fw-retry"))

    assert await run(acts, "suspend", request("fw-retry")) == first
    assert len(controller.calls_to("fw-retry")) == calls
    assert [r["outcome"] for r in await recorded(pool, "fw-retry")] == ["changed"]


async def test_a_key_reused_for_another_action_is_refused(pool, controller, secrets):
    acts = activities(pool, firewall(controller, secrets, "fw-key"))
    await run(acts, "suspend", request("fw-key", "step-1"))
    error = await refusal(acts, "restore", request("fw-key", "step-1"))
    assert error.type == "IdempotencyKeyReused"
    assert controller.state("fw-key") == "suspended"


async def test_unknown_ids_and_other_customers_equipment_are_refused_and_change_nothing(pool, controller, secrets):
    acts = activities(pool, firewall(controller, secrets, "fw-other", customer_id="CUST-2"))

    unknown = await refusal(acts, "suspend", request("fw-nowhere"))
    assert (unknown.type, unknown.message) == ("EquipmentRefused", "equipment 'fw-nowhere' is not in the registry")
    theirs = await refusal(acts, "suspend", request("fw-other", customer_id="CUST-1"))
    assert theirs.type == "EquipmentRefused"
    assert "does not belong to customer 'CUST-1'" in theirs.message

    assert controller.calls_to("fw-nowhere") == controller.calls_to("fw-other") == []
    assert controller.state("fw-other") == "active"
    [row] = await recorded(pool, "fw-other")
    assert (row["outcome"], row["customer_id"], row["detail"]) == ("refused", "CUST-1", theirs.message)
    assert [r["outcome"] for r in await recorded(pool, "fw-nowhere")] == ["refused"]


async def test_the_global_kill_switch_setting_refuses_and_changes_nothing(pool, controller, secrets):
    acts = activities(pool, firewall(controller, secrets, "fw-global"), global_kill_switch=True)
    error = await refusal(acts, "suspend", request("fw-global"))
    assert error.type == "KillSwitchOn"
    assert controller.calls_to("fw-global") == []
    assert [r["outcome"] for r in await recorded(pool, "fw-global")] == ["kill_switch"]


async def test_kill_switches_in_postgres_are_read_at_each_call(pool, controller, secrets):
    acts = activities(
        pool, firewall(controller, secrets, "fw-mine"), firewall(controller, secrets, "fw-theirs", customer_id="CUST-2")
    )
    await set_kill_switch(pool, "CUST-1", reason="customer disputes the cut", set_by="ops:ana")

    error = await refusal(acts, "suspend", request("fw-mine"))
    assert error.type == "KillSwitchOn"
    assert "set by ops:ana" in error.message and "customer disputes the cut" in error.message
    assert controller.calls_to("fw-mine") == []
    # another customer's equipment is not stopped by this customer's switch
    assert (await run(acts, "suspend", request("fw-theirs", customer_id="CUST-2"))).changed

    await set_kill_switch(pool, None, reason="incident 4711", set_by="ops:ion")  # every customer
    assert "incident 4711" in (await refusal(acts, "restore", request("fw-theirs", "restore", "CUST-2"))).message
    assert controller.state("fw-theirs") == "suspended"

    assert await clear_kill_switch(pool, None) and await clear_kill_switch(pool, "CUST-1")
    assert (await run(acts, "suspend", request("fw-mine", "suspend-again"))).changed
    assert controller.state("fw-mine") == "suspended"


async def test_a_customer_called_global_is_one_customer_not_everyone(pool, controller, secrets):
    acts = activities(
        pool, firewall(controller, secrets, "fw-g", customer_id="global"), firewall(controller, secrets, "fw-other")
    )
    await set_kill_switch(pool, "global", reason="the customer called global disputes the cut", set_by="ops:ana")
    error = await refusal(acts, "suspend", request("fw-g", customer_id="global"))
    assert "kill switch for global set by ops:ana" in error.message
    assert (await run(acts, "suspend", request("fw-other"))).changed  # CUST-1 is not stopped by it

    await set_kill_switch(pool, None, reason="incident 4712", set_by="ops:ion")
    assert "kill switch for every customer" in (await refusal(acts, "restore", request("fw-other", "restore"))).message
    assert await clear_kill_switch(pool, "global")  # clears the customer's switch, not everyone's
    assert "incident 4712" in (await refusal(acts, "restore", request("fw-other", "restore-again"))).message


async def test_dry_run_contacts_nothing_and_is_recorded(pool, controller, agent, secrets):
    acts = activities(pool, firewall(controller, secrets, "fw-dry"), switch(agent, secrets), dry_run=True)

    result = await run(acts, "suspend", request("fw-dry"))
    assert (result.dry_run, result.changed, result.state) == (True, False, "not read (dry run)")
    assert await run(acts, "suspend", request("fw-dry")) == result  # a retry of the step
    await run(acts, "suspend", request("sw-1", "dry-suspend"))

    assert controller.calls_to("fw-dry") == []
    assert await agent.admin_status(7, 8) == {7: UP, 8: UP}
    [row] = await recorded(pool, "fw-dry")
    assert (row["outcome"], row["dry_run"], row["state_read_back"]) == ("dry_run", True, None)
    assert row["detail"] == f"would suspend webhook fw-dry at {controller.url}"
    assert row["requested_by"] == "invoice-INV-1"


async def test_the_activity_heartbeats_while_waiting_on_the_peer(pool, controller, secrets):
    acts = activities(pool, firewall(controller, secrets, "fw-slow"))
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.3))
    heartbeats: list[tuple] = []
    env.on_heartbeat = lambda *details: heartbeats.append(details)
    controller.delay_s = 0.3  # three calls: status, suspend, status
    try:
        assert (await env.run(acts.suspend_equipment, request("fw-slow"))).changed
    finally:
        controller.delay_s = 0.0
    assert len(heartbeats) >= 5


async def test_rejected_credentials_are_recorded_and_not_retried(pool, controller, secrets, tmp_path):
    wrong = firewall(controller, secrets, "fw-wrong").model_copy(
        update={"credentials": CredentialRef(file=write_secret(tmp_path, "wrong", "not-the-secret"))}
    )
    error = await refusal(activities(pool, wrong), "suspend", request("fw-wrong"))
    assert error.type == "EquipmentAuthFailed"
    [row] = await recorded(pool, "fw-wrong")
    assert (row["outcome"], row["detail"]) == ("failed", error.message)


async def test_an_unreachable_peer_raises_for_temporal_to_retry_and_completes_nothing(pool, controller, secrets):
    gone = firewall(controller, secrets, "fw-gone").model_copy(
        update={"endpoint": f"http://127.0.0.1:{free_port()}/dunning"}
    )
    with pytest.raises(EquipmentUnreachable):
        await run(activities(pool, gone), "suspend", request("fw-gone"))
    assert await recorded(pool, "fw-gone") == []


async def states_before_cut(pool: asyncpg.Pool, equipment_id: str) -> list[tuple[str, dict]]:
    rows = await pool.fetch(
        "SELECT idempotency_key, state FROM equipment_states_before_cut WHERE equipment_id = $1 ORDER BY id",
        equipment_id,
    )
    return [(row["idempotency_key"], row["state"]) for row in rows]


async def test_a_port_that_was_down_before_the_cut_stays_down_after_the_restore(pool, agent, secrets):
    acts = activities(pool, switch(agent, secrets, "sw-mixed", (9, 10)))

    assert (await run(acts, "suspend", request("sw-mixed"))).state == "down"
    assert await agent.admin_status(9, 10) == {9: DOWN, 10: DOWN}
    assert await states_before_cut(pool, "sw-mixed") == [("invoice-INV-1/suspend/sw-mixed", {"9": "up", "10": "down"})]

    back = await run(acts, "restore", request("sw-mixed", "restore"))
    assert (back.changed, back.state) == (True, "9=up,10=down")
    assert await agent.admin_status(1, 9, 10) == {1: UP, 9: UP, 10: DOWN}


async def test_a_suspend_retried_after_a_crash_keeps_the_first_state_before_the_cut(pool, agent, secrets):
    entry = switch(agent, secrets, "sw-crash", (11, 12))
    cut = request("sw-crash")
    # the first attempt remembered the ports and cut them, then its worker died before recording the action
    await SnmpAdapter(entry).suspend(cut, functools.partial(remember_state_before_cut, pool, cut))
    assert await agent.admin_status(11, 12) == {11: DOWN, 12: DOWN}
    assert await recorded(pool, "sw-crash") == []

    acts = activities(pool, entry)
    assert (await run(acts, "suspend", cut)).state == "down"  # the retry finds everything down
    assert await states_before_cut(pool, "sw-crash") == [("invoice-INV-1/suspend/sw-crash", {"11": "up", "12": "down"})]

    await run(acts, "restore", request("sw-crash", "restore"))
    assert await agent.admin_status(11, 12) == {11: UP, 12: DOWN}


async def test_a_server_its_owner_had_switched_off_stays_off_after_the_restore(pool, bmc, secrets):
    acts = activities(pool, server(bmc, secrets, "switched-off"))

    cut = await run(acts, "suspend", request("bmc-switched-off"))
    assert (cut.changed, cut.state) == (False, "Off")
    back = await run(acts, "restore", request("bmc-switched-off", "restore"))
    assert (back.changed, back.state) == (False, "Off")
    assert bmc.power_state("switched-off") == "Off"
    assert bmc.resets_received("switched-off") == []


async def test_a_second_cut_while_the_first_is_in_force_keeps_what_the_owner_had(pool, controller, secrets):
    """Two invoices cut the same controller: the second finds it suspended by the first, which is not
    the owner's state; after the restores it is active again."""
    acts = activities(pool, firewall(controller, secrets, "fw-twice"))
    await run(acts, "suspend", request("fw-twice", "invoice-1-suspend"))
    assert (await run(acts, "suspend", request("fw-twice", "invoice-2-suspend"))).changed is False
    assert [state for _, state in await states_before_cut(pool, "fw-twice")] == [{"state": "active"}] * 2

    assert (await run(acts, "restore", request("fw-twice", "invoice-1-restore"))).state == "active"
    assert controller.state("fw-twice") == "active"


async def test_a_controller_suspended_before_the_cut_stays_suspended(pool, controller, secrets):
    acts = activities(pool, firewall(controller, secrets, "fw-already"))
    controller.states["fw-already"] = "suspended"  # by the customer's own staff
    await run(acts, "suspend", request("fw-already"))
    back = await run(acts, "restore", request("fw-already", "restore"))
    assert (back.changed, back.state) == (False, "suspended")
    assert controller.calls_to("fw-already", "restore") == []
