"""``dunning dev --demo`` tells the whole story: with the ladder compressed to seconds, the demo
customer's invoices climb every rung (notices in the mail folder), the server is powered off and the
switch port set down at the peers, the printed command pays, and the equipment comes back.

The peers are read here with our own requests (HTTP GET, SNMP GET), from the registry the demo wrote.
"""

from __future__ import annotations

import asyncio
import email
import shlex
import tomllib
from datetime import timedelta
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


def mail_subjects(stack: DevStack) -> list[str]:
    return [
        email.message_from_bytes(path.read_bytes())["Subject"] for path in sorted((stack.data_dir / "mail").glob("*.eml"))
    ]


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
        assert len(mail_subjects(stack)) >= 2 * (1 + len(LADDER)), mail_subjects(stack)  # issued + a notice per rung

        command = next(line.strip() for line in stack.printed("invoice pay") if hosting in line)
        argv = shlex.split(command)
        assert argv[0] == ".venv/bin/dunning"
        print(succeeded(await dunning(stack.env, *argv[1:])))

        await eventually(lambda: stack.printed(f"{hosting}  closed: paid"), timeout=30)
        assert stack.printed(f"{hosting}  payment DEMO-PAY-1 of")

        async def restored() -> bool:
            return await equipment(bmc, switch) == ("On", UP)

        await eventually(restored, timeout=60)
        await eventually(lambda: stack.printed(f"{hosting}  equipment {SERVER_ID} restored"), timeout=10)
        running = f"demo: equipment at the peers: {SERVER_ID} On, {PORT_ID} up"
        await eventually(lambda: len(stack.printed(running)) == 2, timeout=10)  # before the cut, and after the payment
