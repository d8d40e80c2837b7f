"""``dunning dev --demo`` tells the whole story: with the ladder compressed to seconds, the demo
customer's invoices climb every rung (notices in the mail folder), the server is powered off and the
switch port set down at the peers, each rung's notices of both invoices go out as one digest with the
statement, the printed transfer to the customer pays both, and the equipment comes back.

The peers are read here with our own requests (HTTP GET, SNMP GET), from the registry the demo wrote.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import shlex
import tomllib
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

from tests.cli_helpers import dunning, succeeded
from tests.dev_stacks import DevStack, dev_stack
from tests.harness import eventually
from worker.demo import IF_INDEX, LADDER, PORT_ID, SERVER_ID, SYSTEM_NAME
from worker.peers import RedfishPeer, SnmpPeer

RUNG = timedelta(seconds=4)
UP, DOWN = 1, 2


def peers(stack: DevStack) -> tuple[RedfishPeer, SnmpPeer]:
    """The emulator and the agent, as the demo's registry names them."""
    registry_file = stack.data_dir / "demo" / "equipment.toml"
    registry = {entry["id"]: entry for entry in tomllib.loads(registry_file.read_text())["equipment"]}
    server, port = registry[SERVER_ID], registry[PORT_ID]
    system_id = server["system_path"].rsplit("/", 1)[1]
    bmc = RedfishPeer(
        url=server["endpoint"], ca_file=server["ca_file"], username=server["username"],
        password=Path(server["credentials"]["file"]).read_text().strip(), systems={SYSTEM_NAME: system_id}, log=None,
    )
    community = Path(port["credentials"]["file"]).read_text().strip()
    switch = SnmpPeer(
        endpoint=port["endpoint"], port=int(port["endpoint"].rsplit(":", 1)[1]), community=community,
        user="", auth_key="", priv_key="",
    )
    return bmc, switch


async def equipment(bmc: RedfishPeer, switch: SnmpPeer) -> tuple[str, int]:
    return await asyncio.to_thread(bmc.power_state, SYSTEM_NAME), (await switch.admin_status(IF_INDEX))[IF_INDEX]


def mails(stack: DevStack) -> list[EmailMessage]:
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted((stack.data_dir / "mail").glob("*.eml"))
    ]


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    return body.get_content() if body is not None else ""


async def test_the_demo_climbs_the_ladder_cuts_the_equipment_and_restores_it_once_paid():
    async with dev_stack(demo_unit=RUNG) as stack:
        assert stack.printed("Equipment")[0]  # the banner names the demo's registry
        bmc, switch = peers(stack)
        assert await equipment(bmc, switch) == ("On", UP)

        await eventually(lambda: stack.printed("demo: to pay"), timeout=len(LADDER) * RUNG.total_seconds() + 150)  # a loaded machine renders slowly
        hosting = stack.printed("demo: customer")[0].split("invoices ")[1].split()[0]
        story = [f"stage {rung} reached" for rung in ("reminder", "warning", "late fee", "ultimatum", "suspend")]
        story += [f"notice sent: {notice} to" for notice in ("reminder", "warning", "late fee", "ultimatum", "suspended")]
        story += [f"equipment {SERVER_ID} cut", f"equipment {PORT_ID} cut"]

        def told() -> list[str]:
            return [step for step in story if not any(step in line for line in stack.printed(f"  {hosting}  "))]

        await eventually(lambda: not told(), timeout=30)
        assert await equipment(bmc, switch) == ("Off", DOWN)
        support = stack.printed("demo: customer")[0].split(") and ")[1].split()[0]
        digests = [m for m in mails(stack) if hosting in _text(m) and support in _text(m)]
        # a message a rung names both; the hosting invoice's suspension notice waits for its cut, so it may go alone
        assert len(digests) >= len(LADDER) - 1, [m["Subject"] for m in mails(stack)]
        assert all(any(part.get_content_type() == "application/pdf" for part in m.iter_attachments()) for m in digests)

        [command] = [line.strip() for line in stack.printed("customer pay")]
        argv = shlex.split(command)
        assert argv[:3] == [".venv/bin/dunning", "customer", "pay"] and argv[-1].split() == [hosting, support]
        print(succeeded(await dunning(stack.env, *argv[1:])))

        for invoice_id in (hosting, support):  # one transfer, split: each invoice paid by its part
            await eventually(lambda invoice_id=invoice_id: stack.printed(f"{invoice_id}  closed: paid"), timeout=30)
            assert stack.printed(f"{invoice_id}  payment DEMO-PAY-1--{invoice_id} of")

        async def restored() -> bool:
            return await equipment(bmc, switch) == ("On", UP)

        await eventually(restored, timeout=60)
        await eventually(lambda: stack.printed(f"{hosting}  equipment {SERVER_ID} restored"), timeout=10)
        running = f"demo: equipment at the peers: {SERVER_ID} On, {PORT_ID} up"
        await eventually(lambda: len(stack.printed(running)) == 2, timeout=10)  # before the cut, and after the payment
