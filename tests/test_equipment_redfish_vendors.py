"""The Redfish adapter against recorded trees of iDRAC, iLO 5, OpenBMC and Supermicro BMCs (served by
``tests.redfish_mockups`` with its action layer): reset types, TLS to a BMC addressed by IP, sessions,
redirects, 409 and 202 answers. Each test reads the peer back itself (a plain GET of PowerState, and
the ResetTypes and sessions the peer recorded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from activities.equipment.adapter import EquipmentMisconfigured, EquipmentStateUnconfirmed, Reading
from activities.equipment.redfish import RedfishAdapter
from activities.equipment.registry import CredentialRef, RedfishEquipment
from tests.equipment_peers import write_secret
from tests.redfish_mockups import MockupBmc, mockup_bmc
from workflows.models import EquipmentRequest

ILO_NAME = "ilo-cz2d1f0abc.example.net"  # what an iLO's factory certificate and its session links name
REQUEST = EquipmentRequest(
    idempotency_key="test-vendors",
    equipment_id="bmc-1",
    customer_id="CUST-1",
    invoice_id="INV-1",
    reason="unpaid at the suspension stage",
    requested_by="invoice-INV-1",
)


def entry(bmc: MockupBmc, tmp_path: Path, **overrides: Any) -> RedfishEquipment:
    fields: dict[str, Any] = {
        "id": "bmc-1",
        "customer_id": "CUST-1",
        "kind": "redfish",
        "endpoint": bmc.url,
        "username": bmc.username,
        "credentials": CredentialRef(file=write_secret(tmp_path, "bmc-password", bmc.password)),
        "graceful_timeout_s": 5,
        "power_timeout_s": 5,
        "poll_interval_s": 0.05,
        "request_timeout_s": 5,
    }
    fields.update(overrides)
    return RedfishEquipment(**fields)


def suspend(bmc: MockupBmc, tmp_path: Path, **overrides: Any):
    return RedfishAdapter(entry(bmc, tmp_path, **overrides)).suspend(REQUEST)


# --- 1. TLS to a BMC addressed by IP ------------------------------------------------------


async def test_a_certificate_naming_the_bmcs_host_is_reported_as_a_name_mismatch_not_as_untrusted(tmp_path):
    with mockup_bmc("ilo5", tls_names=(ILO_NAME,)) as bmc:
        with pytest.raises(EquipmentMisconfigured, match="issued to another name .*; set tls_server_name") as caught:
            await suspend(bmc, tmp_path, ca_file=bmc.ca_file)
        assert "not trusted" not in str(caught.value)
        assert (bmc.sessions_opened, bmc.resets, bmc.read_power_state()) == (0, [], "On")


async def test_tls_server_name_verifies_the_certificate_against_the_name_it_carries(tmp_path):
    with mockup_bmc("ilo5", tls_names=(ILO_NAME,), session_host=ILO_NAME) as bmc:
        adapter = RedfishAdapter(entry(bmc, tmp_path, ca_file=bmc.ca_file, tls_server_name=ILO_NAME))
        assert await adapter.suspend(REQUEST) == Reading(changed=True, state="Off")
        assert bmc.read_power_state() == "Off"
        # the session's Location names the iLO by that name: the same BMC, and its session is closed
        assert (bmc.sessions_opened, bmc.sessions_open) == (1, {})


async def test_a_pinned_fingerprint_is_the_trust_and_a_wrong_one_is_refused_before_credentials_are_sent(tmp_path):
    with mockup_bmc("idrac", tls_names=("idrac-FOOBAR.example",)) as bmc:
        pinned = RedfishAdapter(entry(bmc, tmp_path, tls_fingerprint_sha256=bmc.fingerprint.lower().replace(":", "")))
        assert await pinned.status() == "On"
        assert bmc.sessions_opened == 1

        other = "AA:" * 31 + "AA"
        with pytest.raises(EquipmentMisconfigured, match=f"not the pinned one: its SHA-256 fingerprint is {bmc.fingerprint}"):
            await suspend(bmc, tmp_path, tls_fingerprint_sha256=other)
        assert (bmc.sessions_opened, bmc.resets, bmc.read_power_state()) == (1, [], "On")


# --- 2. Reset types -----------------------------------------------------------------------


async def test_ilo5_which_has_no_graceful_shutdown_gets_the_power_button_not_a_power_cut(tmp_path):
    with mockup_bmc("ilo5", os_shutdown_s=0.2) as bmc:
        assert await suspend(bmc, tmp_path) == Reading(changed=True, state="Off")
        assert bmc.resets == ["PushPowerButton"]
        assert bmc.read_power_state() == "Off"


async def test_ilo5_is_forced_off_after_the_button_only_when_the_entry_allows_it(tmp_path):
    with mockup_bmc("ilo5", os_shutdown_s=None) as bmc:
        assert await suspend(bmc, tmp_path, graceful_timeout_s=0.3) == Reading(changed=True, state="Off")
        assert bmc.resets == ["PushPowerButton", "ForceOff"]
        assert bmc.read_power_state() == "Off"

    with mockup_bmc("ilo5", os_shutdown_s=None) as bmc:
        with pytest.raises(EquipmentStateUnconfirmed, match='after PushPowerButton; power_off = "push_power_button"'):
            await suspend(bmc, tmp_path, graceful_timeout_s=0.3, power_off="push_power_button")
        assert (bmc.resets, bmc.read_power_state(), bmc.sessions_open) == (["PushPowerButton"], "On", {})


async def test_graceful_only_on_a_bmc_without_graceful_shutdown_says_so_and_touches_nothing(tmp_path):
    with mockup_bmc("ilo5") as bmc:
        with pytest.raises(EquipmentMisconfigured, match='takes none of GracefulShutdown .*set power_off = "force_off_after"'):
            await suspend(bmc, tmp_path, power_off="graceful_only")
        assert (bmc.resets, bmc.read_power_state()) == ([], "On")
        assert (bmc.sessions_opened, bmc.sessions_open) == (1, {})  # closed although the action failed


async def test_supermicro_reset_types_come_from_its_action_info(tmp_path):
    # its AllowableValues run "GracefulShutdownGracefulRestart" together; the ActionInfo lists GracefulShutdown
    with mockup_bmc("supermicro", os_shutdown_s=0.1) as bmc:
        assert await suspend(bmc, tmp_path) == Reading(changed=True, state="Off")
        assert bmc.resets == ["GracefulShutdown"]
        assert bmc.read_power_state() == "Off"


async def test_a_reset_type_refused_with_400_falls_through_to_the_next_allowed_one(tmp_path):
    # OpenBMC lists its reset types only in ResetActionInfo (no PushPowerButton); it refuses GracefulShutdown here
    with mockup_bmc("openbmc", refuse={"GracefulShutdown"}) as bmc:
        assert await suspend(bmc, tmp_path) == Reading(changed=True, state="Off")
        assert bmc.answers == [("GracefulShutdown", 400), ("ForceOff", 204)]
        assert bmc.read_power_state() == "Off"

        assert await RedfishAdapter(entry(bmc, tmp_path)).restore(REQUEST) == Reading(changed=True, state="On")
        assert bmc.answers[-1] == ("On", 204)
        assert bmc.read_power_state() == "On"


# --- 3. "Already off" ---------------------------------------------------------------------


async def test_idrac_409_already_off_at_force_off_is_success_read_back(tmp_path):
    with mockup_bmc("idrac", os_shutdown_s=None, finishes_shutdown_at_force_off=True) as bmc:
        assert await suspend(bmc, tmp_path, graceful_timeout_s=0.2) == Reading(changed=True, state="Off")
        assert bmc.answers == [("GracefulShutdown", 204), ("ForceOff", 409)]
        assert bmc.read_power_state() == "Off"


# --- 4. Redirects and slashes -------------------------------------------------------------


@pytest.mark.parametrize("system_path", ["/redfish/v1/Systems/1", "/redfish/v1/Systems/1/", None])
async def test_ilo4_redirects_to_slashed_paths_are_followed_and_either_spelling_works(tmp_path, system_path):
    with mockup_bmc("ilo5", redirect_without_slash=True, os_shutdown_s=0.1) as bmc:
        assert await suspend(bmc, tmp_path, system_path=system_path) == Reading(changed=True, state="Off")
        assert bmc.resets == ["PushPowerButton"]
        assert bmc.read_power_state() == "Off"


async def test_a_redirect_is_followed_only_while_it_stays_on_the_bmc(tmp_path):
    with mockup_bmc("ilo5", redirect_without_slash=True, redirect_host="elsewhere.example") as bmc:
        with pytest.raises(EquipmentMisconfigured, match="pointed outside its own address .*elsewhere.example"):
            await suspend(bmc, tmp_path, system_path="/redfish/v1/Systems/1")
        assert (bmc.resets, bmc.read_power_state()) == ([], "On")

    with mockup_bmc("ilo5", redirect_without_slash=True, redirect_host=ILO_NAME, os_shutdown_s=0) as bmc:
        suspended = await suspend(bmc, tmp_path, system_path="/redfish/v1/Systems/1", host_aliases=[ILO_NAME])
        assert suspended == Reading(changed=True, state="Off")
        assert (bmc.resets, bmc.read_power_state(), bmc.sessions_open) == (["PushPowerButton"], "Off", {})


# --- 5. Sessions --------------------------------------------------------------------------


async def test_an_absolute_session_location_is_accepted_for_a_configured_name_of_the_same_bmc(tmp_path):
    with mockup_bmc("ilo5", session_host=ILO_NAME) as bmc:
        with pytest.raises(EquipmentMisconfigured, match="list it in host_aliases"):
            await suspend(bmc, tmp_path)
        # the session it opened is closed all the same, and nothing was reset
        assert (bmc.sessions_opened, bmc.sessions_open, bmc.resets) == (1, {}, [])

        assert await RedfishAdapter(entry(bmc, tmp_path, host_aliases=[ILO_NAME])).status() == "On"
        assert (bmc.sessions_opened, bmc.sessions_open) == (2, {})


# --- 9. Tasks -----------------------------------------------------------------------------


async def test_a_202_task_monitor_is_followed_until_done_then_the_state_is_read_back(tmp_path):
    with mockup_bmc("idrac", task_polls=3, os_shutdown_s=0) as bmc:
        assert await suspend(bmc, tmp_path) == Reading(changed=True, state="Off")
        assert bmc.answers == [("GracefulShutdown", 202)]
        assert bmc.read_power_state() == "Off"

        assert await RedfishAdapter(entry(bmc, tmp_path)).restore(REQUEST) == Reading(changed=True, state="On")
        assert bmc.answers[-1] == ("On", 202)
        assert bmc.read_power_state() == "On"
