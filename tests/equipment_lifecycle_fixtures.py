"""Helpers for the equipment lifecycle tests: two customers' equipment on the loopback peers, a
registry file naming it, and a worker that runs the real workflow with the real equipment
activities and event store (notices, service and holidays recorded)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.calendar import public_holidays
from activities.customer import hold_at_customer, release_at_customer
from activities.equipment.activities import EquipmentActivities
from activities.equipment.registry import Registry
from activities.ledger import LedgerActivities, read_events
from bench.recording import Recorder
from tests.equipment_peers import RedfishPeer, SnmpPeer, write_secret
from tests.harness import eventually
from worker.sandbox import workflow_runner
from workflows import policy
from workflows.customer import CustomerWorkflow
from workflows.events import RecordedEvent
from workflows.invoice import InvoiceWorkflow
from workflows.models import Invoice, InvoiceOutcome, StageAction

CUSTOMER_A, CUSTOMER_B = "CUST-A", "CUST-B"
UP, DOWN = 1, 2
POWER_CHANGE_S = 15  # sushy-emulator's fake driver applies a power change within 1 to 11 s
PORTS_PER_SITE = 3  # two of customer A, one of customer B


@dataclass(frozen=True)
class Site:
    """One test's equipment: customer A's server and two switch ports, customer B's server and port.

    ``server_*`` and ``port_*`` are registry ids; ``system_a``, ``system_b`` (emulator system names)
    and ``if_index`` (port id to ifIndex) say where each piece is on the peers, so a test can read
    it there directly.
    """

    registry_file: Path
    server_a: str
    system_a: str
    port_a1: str
    port_a2: str
    server_b: str
    system_b: str
    port_b: str
    if_index: dict[str, int]

    @property
    def ports_a(self) -> list[str]:
        return [self.port_a1, self.port_a2]

    @property
    def equipment_a(self) -> list[str]:
        return [self.server_a, *self.ports_a]


def write_site(folder: Path, bmc: RedfishPeer, switch: SnmpPeer, number: int) -> Site:
    """Register site ``number``: Redfish system ``a-<n>`` and ifIndex ``3n+1``, ``3n+2`` for A;
    system ``b-<n>`` and ifIndex ``3n+3`` for B."""
    password = write_secret(folder, "bmc-password", bmc.password)
    community = write_secret(folder, "community", switch.community)
    first = PORTS_PER_SITE * number + 1
    site = Site(
        registry_file=folder / "equipment.toml",
        server_a=f"srv-a-{number}",
        system_a=f"a-{number}",
        port_a1=f"sw-a-{first}",
        port_a2=f"sw-a-{first + 1}",
        server_b=f"srv-b-{number}",
        system_b=f"b-{number}",
        port_b=f"sw-b-{first + 2}",
        if_index={f"sw-a-{first}": first, f"sw-a-{first + 1}": first + 1, f"sw-b-{first + 2}": first + 2},
    )
    servers = [(site.server_a, CUSTOMER_A, site.system_a), (site.server_b, CUSTOMER_B, site.system_b)]
    ports = [(site.port_a1, CUSTOMER_A), (site.port_a2, CUSTOMER_A), (site.port_b, CUSTOMER_B)]
    tables = [
        {
            "id": equipment_id,
            "customer_id": customer,
            "kind": "redfish",
            "endpoint": bmc.url,
            "username": bmc.username,
            "credentials": {"file": str(password)},
            "auth": "basic",
            "system_path": bmc.system_path(system),
            "graceful_timeout_s": POWER_CHANGE_S,
            "power_timeout_s": POWER_CHANGE_S,
            "poll_interval_s": 0.2,
            "ca_file": str(bmc.ca_file),
        }
        for equipment_id, customer, system in servers
    ] + [
        {
            "id": equipment_id,
            "customer_id": customer,
            "kind": "snmp",
            "endpoint": switch.endpoint,
            "version": "2c",
            "ports": [site.if_index[equipment_id]],
            "credentials": {"file": str(community)},
            "request_timeout_s": 1,
            "retries": 1,
        }
        for equipment_id, customer in ports
    ]
    site.registry_file.write_text("\n".join(_toml_table(table) for table in tables))
    return site


def _toml_table(fields: dict) -> str:
    """One ``[[equipment]]`` table; JSON strings, numbers, lists and inline tables are valid TOML here."""
    lines = ["[[equipment]]"]
    for key, value in fields.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def lifecycle_worker(
    client: Client, pool: asyncpg.Pool, registry_file: Path, recorder: Recorder, global_kill_switch: bool = False
) -> AsyncIterator[str]:
    """The invoice and customer workflows with the real equipment and ledger activities; yields the task queue."""
    equipment = EquipmentActivities(Registry.load(registry_file), pool, global_kill_switch=global_kill_switch)
    queue = f"lifecycle-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[InvoiceWorkflow, CustomerWorkflow],
        workflow_runner=workflow_runner(),
        activities=[
            LedgerActivities(pool).append_events,
            hold_at_customer,
            release_at_customer,
            equipment.suspend_equipment,
            equipment.restore_equipment,
            recorder.send_notice,
            recorder.send_agency_package,
            recorder.suspend_service,
            recorder.restore_service,
            public_holidays,
        ],
    ):
        yield queue


async def reach_suspension(env: WorkflowEnvironment, pool: asyncpg.Pool, invoice: Invoice) -> None:
    """Skip time to the suspension stage and wait (in real time) until the suspension notice is
    recorded in the event store: the workflow sends it after every equipment activity has ended,
    and writes it with (or after) the equipment events."""
    due: datetime = policy.stage_due_at(invoice, invoice.policy.stage(StageAction.SUSPEND), timedelta(0))
    await env.sleep(due - await env.get_current_time() + timedelta(seconds=1))

    async def notice_stored() -> bool:
        sent = await events_of(pool, invoice.invoice_id, "notice_sent")
        return any(event.data["kind"] == "suspended" for event in sent)

    await eventually(notice_stored, timeout=2 * POWER_CHANGE_S + 10)


async def finish(handle: WorkflowHandle, timeout: float = 2 * POWER_CHANGE_S + 10) -> InvoiceOutcome:
    """The workflow's outcome, waiting at most ``timeout`` seconds of real time."""
    return await asyncio.wait_for(handle.result(), timeout)


async def events_of(pool: asyncpg.Pool, invoice_id: str, *kinds: str) -> list[RecordedEvent]:
    """The stored events of one invoice of these kinds, in order."""
    return [e for e in await read_events(pool, invoice_id) if e.kind.value in kinds]


async def equipment_rows(pool: asyncpg.Pool) -> list[dict]:
    """Every ``equipment_actions`` row, in order (each test has a database of its own)."""
    rows = await pool.fetch(
        "SELECT equipment_id, customer_id, invoice_id, action, requested_by, reason, outcome, state_read_back,"
        " dry_run, detail FROM equipment_actions ORDER BY id"
    )
    return [dict(row) for row in rows]
