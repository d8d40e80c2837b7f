"""The equipment activities on a real Postgres, against the loopback controller and SNMP agent:
refusals, kill switches, dry run, heartbeats, idempotency and the record of every action."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.equipment.activities import EquipmentActivities
from activities.equipment.adapter import EquipmentUnreachable
from activities.equipment.journal import clear_kill_switch, set_kill_switch
from activities.equipment.registry import CredentialRef, Equipment, Registry, SnmpEquipment, WebhookEquipment
from activities.ledger import create_pool
from tests.equipment_peers import ControllerPeer, SnmpPeer, controller_peer, free_port, snmp_peer, write_secret
from workflows.models import EquipmentRequest, EquipmentResult

UP, DOWN = 1, 2


@pytest.fixture(scope="module")
def controller() -> Iterator[ControllerPeer]:
    with controller_peer() as peer:
        yield peer


@pytest.fixture(scope="module")
def agent() -> Iterator[SnmpPeer]:
    with snmp_peer({1: UP, 7: UP, 8: UP}) as peer:
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


def switch(agent: SnmpPeer, secrets: Path) -> SnmpEquipment:
    return SnmpEquipment(
        id="sw-1",
        customer_id="CUST-1",
        kind="snmp",
        endpoint=agent.endpoint,
        ports=[7, 8],
        version="2c",
        credentials=CredentialRef(file=write_secret(secrets, "community", agent.community)),
        request_timeout_s=0.5,
        retries=1,
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
