"""``dunning dev --demo``: equipment peers on loopback, a registry for them, and a demo customer whose
two invoices climb a policy measured in minutes, so a newcomer watches the whole ladder, pays, and
watches the restore.

The customer is the example invoice's (``examples/invoice.json``), and the registry holds its two
pieces of equipment, on the Redfish emulator and the SNMP simulator of ``worker.peers``; so the
README's quick tour also runs against this stack.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from temporalio.client import Client

from client import invoices
from client.invoices import InvoiceError
from workflows.models import Invoice, InvoiceState, InvoiceStatus, minor_units_per_major

CUSTOMER_ID = "RO-40512378"
SERVER_ID = "bmc-srv-cluj-01"
PORT_ID = "sw-cluj-core-port-12"
SYSTEM_NAME = "srv-cluj-01"
IF_INDEX = 12
UP, DOWN = 1, 2
LADDER = ("reminder", "warning", "late_fee", "ultimatum", "suspend")
MINUTE = timedelta(minutes=1)
RUNNING = {SERVER_ID: "On", PORT_ID: "up"}
CUT = {SERVER_ID: "Off", PORT_ID: "down"}


@dataclass
class DemoSite:
    """The running peers and the registry that names them; ``equipment()`` reads their state directly."""

    registry_file: Path
    bmc: Any  # worker.peers.RedfishPeer
    switch: Any  # worker.peers.SnmpPeer

    async def equipment(self) -> dict[str, str]:
        """``{equipment id: state}`` as the peers report it: the server's PowerState, the port's ifAdminStatus."""
        power = await asyncio.to_thread(self.bmc.power_state, SYSTEM_NAME)
        port = (await self.switch.admin_status(IF_INDEX))[IF_INDEX]
        return {SERVER_ID: power, PORT_ID: {UP: "up", DOWN: "down"}.get(port, str(port))}


@contextmanager
def demo_site(folder: Path) -> Iterator[DemoSite]:
    """Start the Redfish emulator (one server, powered on) and the SNMP simulator (its port up) on
    loopback, and write the registry for them in ``folder``. Blocks while they start: call it off the
    event loop."""
    try:
        from worker.peers import redfish_peer, snmp_peer, write_secret
    except ImportError as err:
        raise RuntimeError(
            f"the demo's equipment peers need the test extra ({err.name} is not installed): pip install 'dunning[test]'"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    with redfish_peer({SYSTEM_NAME: "On"}) as bmc, snmp_peer({IF_INDEX: UP}) as switch:
        password = write_secret(folder, "bmc-password", bmc.password)
        community = write_secret(folder, "switch-community", switch.community)
        server = {
            "id": SERVER_ID, "customer_id": CUSTOMER_ID, "kind": "redfish",
            "description": "demo: sushy-emulator on loopback",
            "endpoint": bmc.url, "username": bmc.username, "credentials": {"file": str(password)},
            "auth": "basic", "system_path": bmc.system_path(SYSTEM_NAME), "ca_file": str(bmc.ca_file),
            "graceful_timeout_s": 15, "power_timeout_s": 20, "poll_interval_s": 0.5,
        }
        port = {
            "id": PORT_ID, "customer_id": CUSTOMER_ID, "kind": "snmp",
            "description": "demo: snmpsim on loopback",
            "endpoint": switch.endpoint, "version": "2c", "ports": [IF_INDEX],
            "credentials": {"file": str(community)}, "request_timeout_s": 1, "retries": 1,
        }
        registry = folder / "equipment.toml"
        registry.write_text("\n".join(_toml_table(table) for table in (server, port)))
        yield DemoSite(registry, bmc, switch)


def _toml_table(fields: dict[str, Any]) -> str:
    """One ``[[equipment]]`` table; JSON strings, numbers, lists and inline tables are valid TOML here."""
    lines = ["[[equipment]]"]
    for key, value in fields.items():
        if isinstance(value, dict):
            value_text = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
        else:
            value_text = json.dumps(value)
        lines.append(f"{key} = {value_text}")
    return "\n".join(lines) + "\n"


def demo_invoices(now: datetime, unit: timedelta = MINUTE) -> list[Invoice]:
    """The demo customer's two invoices, due a moment from ``now``, on a ladder one ``unit`` a rung
    (reminder, warning, late fee, ultimatum, suspension), sent at any hour, so their customer sends each
    rung's notices of both as one digest. The first covers the
    hosting and authorises cutting the server and the switch port; the second (support hours) only
    blocks support and new orders. Ids carry the start time, so every demo run has its own."""
    due = (now + unit / 2).astimezone(timezone.utc).replace(microsecond=0)
    tag = now.astimezone(timezone.utc).strftime("%m%d%H%M%S")
    policy = {
        "stages": [{"action": action, "offset": rung * unit} for rung, action in enumerate(LADDER, 1)],
        "due_time": due.time().isoformat(),
        # open at every hour: the customer gathers the two invoices' stage notices into one digest
        "sending_window": {"weekdays": list(range(7)), "opens": "00:00", "closes": "23:59:59", "skip_public_holidays": False},
    }
    common = {
        "customer_id": CUSTOMER_ID,
        "contact": {"name": "Andreea Ionescu", "email": "contabilitate@tehnoserv-cluj.example"},
        "currency": "RON",
        "issue_date": (due - timedelta(days=14)).date(),
        "due_date": due.date(),
        "language": "en",
        "time_zone": "UTC",
        "policy": policy,
    }
    hosting = Invoice.model_validate({
        **common,
        "invoice_id": f"DEMO-{tag}-1",
        "amount_minor": 1_250_000,
        "service": "hosting",
        "terms": {
            "late_fee_percent_per_month": "1.5",
            "fixed_late_fee_minor": 15_000,
            "remote_disconnect_authorized": True,
            "equipment_ids": [SERVER_ID, PORT_ID],
        },
    })
    support = Invoice.model_validate({
        **common,
        "invoice_id": f"DEMO-{tag}-2",
        "amount_minor": 180_000,
        "service": "support",
        "terms": {"late_fee_percent_per_month": "1.5", "fixed_late_fee_minor": 5_000},
    })
    return [hosting, support]


def demo_gathering(unit: timedelta) -> timedelta:
    """How long the demo customer gathers its invoices' stage notices: a quarter of a rung."""
    return unit / 4


def pay_command(customer_id: str, balances: dict[str, int], currency: str, payment_id: str) -> str:
    """The CLI command that pays every invoice of ``balances`` (``{invoice id: balance}``) with one transfer to
    the customer, its remittance naming them."""
    digits = len(str(minor_units_per_major(currency))) - 1
    major, minor = divmod(sum(balances.values()), 10**digits)
    amount = f"{major}.{minor:0{digits}d}" if digits else str(major)
    return (
        f".venv/bin/dunning customer pay {customer_id} --amount {amount} --currency {currency} --payment-id {payment_id}"
        f" --remittance '{' '.join(balances)}'"
    )


async def tell_the_story(
    client: Client, task_queue: str, site: DemoSite, mail_folder: Path, say: Callable[[str], None],
    unit: timedelta = MINUTE, poll_s: float = 1.0,
) -> None:
    """Start the demo invoices, and once the hosting invoice is suspended show the equipment at the peers
    and the command that pays both with one transfer; once it is paid show the equipment again. Runs until
    cancelled."""
    hosting, support = demo_invoices(datetime.now(timezone.utc), unit)
    for invoice in (hosting, support):
        # the notice a cut needs after the ultimatum is a day at least in a policy: here it is one rung
        await invoices.start_invoice(client, task_queue, invoice, minimum_notice=unit)
    total = len(LADDER) * unit + unit / 2
    say(
        f"demo: customer {CUSTOMER_ID}, invoices {hosting.invoice_id} (hosting, cuts {SERVER_ID} and {PORT_ID}) "
        f"and {support.invoice_id} (support); the ladder climbs one rung every {_duration(unit)}, "
        f"suspension in about {_duration(total)}; notices land in {mail_folder}"
    )
    say(f"demo: equipment at the peers: {_states(await site.equipment())}")
    current = await _wait_for_state(client, hosting.invoice_id, InvoiceState.SUSPENDED, poll_s)
    say(f"demo: equipment at the peers: {_states(await _until_equipment(site, CUT, poll_s))}")
    say("demo: to pay both invoices with one transfer and watch the restore, run:")
    balances = {hosting.invoice_id: current.balance_minor}
    balances[support.invoice_id] = (await _status(client, support.invoice_id)).balance_minor
    say("  " + pay_command(CUSTOMER_ID, balances, current.currency, "DEMO-PAY-1"))
    await _wait_for_state(client, hosting.invoice_id, InvoiceState.PAID, poll_s)
    say(f"demo: equipment at the peers: {_states(await _until_equipment(site, RUNNING, poll_s))}")


async def _status(client: Client, invoice_id: str) -> InvoiceStatus:
    return await invoices.status(client, invoice_id)


async def _wait_for_state(client: Client, invoice_id: str, state: InvoiceState, poll_s: float) -> InvoiceStatus:
    while True:
        try:
            current = await invoices.status(client, invoice_id)
        except InvoiceError:
            current = None
        if current is not None and (current.state == state or current.state.closed and state.closed):
            return current
        await asyncio.sleep(poll_s)


async def _until_equipment(site: DemoSite, wanted: dict[str, str], poll_s: float, timeout_s: float = 60) -> dict[str, str]:
    """The equipment's state once it is ``wanted``, or as it is after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (states := await site.equipment()) != wanted and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(poll_s)
    return states


def _states(states: dict[str, str]) -> str:
    return ", ".join(f"{equipment_id} {state}" for equipment_id, state in states.items())


def _duration(span: timedelta) -> str:
    minutes, seconds = divmod(round(span.total_seconds()), 60)
    return " ".join(part for part in (f"{minutes} min" if minutes else "", f"{seconds} s" if seconds else "") if part)
