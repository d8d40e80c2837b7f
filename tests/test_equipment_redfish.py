"""The Redfish adapter against sushy-emulator (fake driver, HTTPS, basic auth); the test reads the
emulator's PowerState and its log of ResetTypes itself.

The fake driver applies a power change 1 to 11 seconds after the request, at a whole second; the
waits below allow for that. The emulator has no SessionService: session authentication is tested
through a small session front (``redfish_session_front``) that passes every call on to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.equipment.adapter import (
    EquipmentAuthFailed,
    EquipmentMisconfigured,
    EquipmentUnreachable,
    Reading,
)
from activities.equipment.redfish import RedfishAdapter
from activities.equipment.registry import CredentialRef, RedfishEquipment
from tests.equipment_peers import RedfishPeer, free_port, redfish_peer, redfish_session_front, write_secret
from workflows.models import EquipmentRequest

POWER_CHANGE_S = 15  # the fake driver's longest delay (11 s) with room to spare


@pytest.fixture(scope="module")
def bmc() -> Iterator[RedfishPeer]:
    # one system per test that changes power, so tests do not depend on each other's order
    with redfish_peer({"to-suspend": "On", "to-force-off": "On", "to-restore": "Off", "untouched": "On"}) as peer:
        yield peer


@pytest.fixture(scope="module")
def password_file(bmc: RedfishPeer, tmp_path_factory) -> Path:
    return write_secret(tmp_path_factory.mktemp("secrets"), "bmc-password", bmc.password)


def equipment(bmc: RedfishPeer, password_file: Path, system: str, **overrides: Any) -> RedfishEquipment:
    fields: dict[str, Any] = {
        "id": f"bmc-{system}",
        "customer_id": "CUST-1",
        "kind": "redfish",
        "endpoint": bmc.url,
        "username": bmc.username,
        "credentials": CredentialRef(file=password_file),
        "auth": "basic",
        "system_path": bmc.system_path(system),
        "graceful_timeout_s": POWER_CHANGE_S,
        "power_timeout_s": POWER_CHANGE_S,
        "poll_interval_s": 0.2,
        "ca_file": bmc.ca_file,
    }
    fields.update(overrides)
    return RedfishEquipment(**fields)


def request(equipment_id: str) -> EquipmentRequest:
    return EquipmentRequest(
        idempotency_key=f"test-{equipment_id}",
        equipment_id=equipment_id,
        customer_id="CUST-1",
        invoice_id="INV-1",
        reason="unpaid at the suspension stage",
        requested_by="invoice-INV-1",
    )


async def test_suspend_shuts_down_gracefully_and_again_changes_nothing(bmc, password_file):
    adapter = RedfishAdapter(equipment(bmc, password_file, "to-suspend"))
    assert bmc.power_state("to-suspend") == "On"

    assert await adapter.suspend(request("bmc-to-suspend")) == Reading(changed=True, state="Off")
    assert bmc.power_state("to-suspend") == "Off"
    assert bmc.resets_received("to-suspend") == ["GracefulShutdown"]

    assert await adapter.suspend(request("bmc-to-suspend")) == Reading(changed=False, state="Off")
    assert bmc.resets_received("to-suspend") == ["GracefulShutdown"]
    assert await adapter.status() == "Off"


async def test_a_system_still_on_after_the_graceful_timeout_is_forced_off(bmc, password_file):
    adapter = RedfishAdapter(equipment(bmc, password_file, "to-force-off", graceful_timeout_s=0.3))
    # start just after a whole second: the fake driver cannot apply the shutdown before the next one,
    # so 0.3 s later the system is still on and the adapter must force it off
    time.sleep(1 - time.time() % 1 + 0.02)

    assert await adapter.suspend(request("bmc-to-force-off")) == Reading(changed=True, state="Off")
    assert bmc.power_state("to-force-off") == "Off"
    assert bmc.resets_received("to-force-off") == ["GracefulShutdown", "ForceOff"]


async def test_restore_powers_on_and_again_changes_nothing(bmc, password_file):
    adapter = RedfishAdapter(equipment(bmc, password_file, "to-restore"))
    assert bmc.power_state("to-restore") == "Off"

    assert await adapter.restore(request("bmc-to-restore")) == Reading(changed=True, state="On")
    assert bmc.power_state("to-restore") == "On"
    assert bmc.resets_received("to-restore") == ["On"]

    assert await adapter.restore(request("bmc-to-restore")) == Reading(changed=False, state="On")
    assert bmc.resets_received("to-restore") == ["On"]


async def test_status_reads_the_power_state(bmc, password_file):
    assert await RedfishAdapter(equipment(bmc, password_file, "untouched")).status() == bmc.power_state("untouched")


async def test_wrong_credentials_are_a_clear_error_and_change_nothing(bmc, tmp_path):
    wrong = equipment(bmc, write_secret(tmp_path, "wrong", "not-the-password"), "untouched")
    with pytest.raises(EquipmentAuthFailed, match="refused the credentials of 'dunning' \\(HTTP 401\\)"):
        await RedfishAdapter(wrong).suspend(request("bmc-untouched"))
    assert bmc.power_state("untouched") == "On"
    assert bmc.resets_received("untouched") == []


async def test_tls_is_verified_against_the_configured_ca(bmc, password_file):
    system_trust = equipment(bmc, password_file, "untouched", ca_file=None)
    untrusted = r"TLS certificate .* is not trusted \(unable to get local issuer certificate\); set ca_file"
    with pytest.raises(EquipmentMisconfigured, match=untrusted):
        await RedfishAdapter(system_trust).suspend(request("bmc-untouched"))
    not_verified = equipment(bmc, password_file, "untouched", ca_file=None, verify_tls=False)
    assert await RedfishAdapter(not_verified).status() == "On"
    assert bmc.resets_received("untouched") == []


async def test_session_auth_needs_a_session_service(bmc, password_file):
    with pytest.raises(EquipmentMisconfigured, match='no SessionService; set auth = "basic"'):
        await RedfishAdapter(equipment(bmc, password_file, "untouched", auth="session")).status()


async def test_session_auth_opens_a_session_uses_its_token_and_closes_it(bmc, password_file, tmp_path):
    with redfish_session_front(bmc) as front:
        through_front = {"auth": "session", "endpoint": front.url, "ca_file": None}
        adapter = RedfishAdapter(equipment(bmc, password_file, "untouched", **through_front))
        assert await adapter.status() == "On"
        assert await adapter.restore(request("bmc-untouched")) == Reading(changed=False, state="On")
        assert (front.opened, front.open_sessions, front.refused) == (2, {}, 0)

        wrong = equipment(bmc, write_secret(tmp_path, "wrong", "not-the-password"), "untouched", **through_front)
        with pytest.raises(EquipmentAuthFailed, match="HTTP 401"):
            await RedfishAdapter(wrong).status()
        assert front.opened == 2
    assert bmc.resets_received("untouched") == []


async def test_without_system_path_the_only_system_is_required(bmc, password_file):
    with pytest.raises(EquipmentMisconfigured, match="the BMC has 4 systems .*; set system_path"):
        await RedfishAdapter(equipment(bmc, password_file, "untouched", system_path=None)).status()


async def test_a_missing_secret_is_a_configuration_error(bmc, monkeypatch):
    monkeypatch.delenv("NO_SUCH_BMC_PASSWORD", raising=False)
    adapter = RedfishAdapter(equipment(bmc, Path("/unused"), "untouched", credentials={"env": "NO_SUCH_BMC_PASSWORD"}))
    with pytest.raises(EquipmentMisconfigured, match="NO_SUCH_BMC_PASSWORD is not set"):
        await adapter.suspend(request("bmc-untouched"))


async def test_a_bmc_that_does_not_answer_is_retryable(bmc, password_file):
    closed = equipment(bmc, password_file, "untouched", endpoint=f"https://127.0.0.1:{free_port()}")
    with pytest.raises(EquipmentUnreachable, match="cannot connect") as caught:
        await RedfishAdapter(closed).status()
    assert caught.value.retryable
