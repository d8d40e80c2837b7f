"""The SNMP adapter against snmpsim (writable ifAdminStatus); the test reads the ports with its own GET."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.equipment.adapter import EquipmentAuthFailed, EquipmentMisconfigured, EquipmentUnreachable, Reading
from activities.equipment.registry import CredentialRef, SnmpEquipment
from activities.equipment.snmp import SnmpAdapter
from tests.equipment_peers import SnmpPeer, free_port, snmp_peer, write_secret
from workflows.models import EquipmentRequest

UP, DOWN = 1, 2
# ports 1 and 2 are never configured: they must never change
PORTS = {1: UP, 2: UP, 12: UP, 13: UP, 21: DOWN, 22: DOWN, 31: UP, 41: UP, 51: UP, 52: DOWN}


@pytest.fixture(scope="module")
def agent() -> Iterator[SnmpPeer]:
    with snmp_peer(PORTS) as peer:
        yield peer


@pytest.fixture(scope="module")
def secrets(agent: SnmpPeer, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("secrets")
    return {
        "community": write_secret(folder, "community", agent.community),
        "auth": write_secret(folder, "auth", agent.auth_key),
        "priv": write_secret(folder, "priv", agent.priv_key),
    }


def v2c(agent: SnmpPeer, secrets: dict[str, Path], ports: list[int], **overrides: Any) -> SnmpEquipment:
    fields: dict[str, Any] = {
        "id": "sw-v2c",
        "customer_id": "CUST-1",
        "kind": "snmp",
        "endpoint": agent.endpoint,
        "ports": ports,
        "version": "2c",
        "credentials": CredentialRef(file=secrets["community"]),
        "request_timeout_s": 0.5,
        "retries": 0,
    }
    return SnmpEquipment(**{**fields, **overrides})


def v3(agent: SnmpPeer, secrets: dict[str, Path], ports: list[int], **overrides: Any) -> SnmpEquipment:
    fields: dict[str, Any] = {
        "id": "sw-v3",
        "customer_id": "CUST-1",
        "kind": "snmp",
        "endpoint": agent.endpoint,
        "ports": ports,
        "version": "3",
        "user": agent.user,
        "auth_protocol": "sha256",
        "credentials": CredentialRef(file=secrets["auth"]),
        "priv_protocol": "aes128",
        "priv_credentials": CredentialRef(file=secrets["priv"]),
        "context_name": agent.community,  # snmpsim serves a data file under its name as the v3 context
        "request_timeout_s": 0.5,
        "retries": 0,
    }
    return SnmpEquipment(**{**fields, **overrides})


def request(equipment_id: str) -> EquipmentRequest:
    return EquipmentRequest(
        idempotency_key=f"test-{equipment_id}",
        equipment_id=equipment_id,
        customer_id="CUST-1",
        invoice_id="INV-1",
        reason="unpaid at the suspension stage",
        requested_by="invoice-INV-1",
    )


async def test_v2c_suspend_takes_the_ports_down_and_again_changes_nothing(agent, secrets):
    adapter = SnmpAdapter(v2c(agent, secrets, [12, 13]))

    assert await adapter.suspend(request("sw-v2c")) == Reading(changed=True, state="down")
    assert await agent.admin_status(1, 2, 12, 13) == {1: UP, 2: UP, 12: DOWN, 13: DOWN}

    assert await adapter.suspend(request("sw-v2c")) == Reading(changed=False, state="down")
    assert await agent.admin_status(1, 2, 12, 13) == {1: UP, 2: UP, 12: DOWN, 13: DOWN}
    assert await adapter.status() == "down"


async def test_v2c_restore_brings_the_ports_up_and_again_changes_nothing(agent, secrets):
    adapter = SnmpAdapter(v2c(agent, secrets, [21, 22]))
    assert await adapter.status() == "down"

    assert await adapter.restore(request("sw-v2c")) == Reading(changed=True, state="up")
    assert await agent.admin_status(1, 2, 21, 22) == {1: UP, 2: UP, 21: UP, 22: UP}

    assert await adapter.restore(request("sw-v2c")) == Reading(changed=False, state="up")
    assert await agent.admin_status(21, 22) == {21: UP, 22: UP}


async def test_v3_suspend_restore_and_status(agent, secrets):
    adapter = SnmpAdapter(v3(agent, secrets, [31]))

    assert await adapter.suspend(request("sw-v3")) == Reading(changed=True, state="down")
    assert await agent.admin_status(1, 2, 31) == {1: UP, 2: UP, 31: DOWN}
    assert await adapter.status() == "down"

    assert await adapter.restore(request("sw-v3")) == Reading(changed=True, state="up")
    assert await agent.admin_status(1, 2, 31) == {1: UP, 2: UP, 31: UP}


async def test_status_names_each_port_when_they_differ(agent, secrets):
    assert await SnmpAdapter(v2c(agent, secrets, [51, 52])).status() == "51=up,52=down"


async def test_wrong_v3_credentials_are_a_clear_error_and_change_nothing(agent, secrets, tmp_path):
    wrong = v3(agent, secrets, [41], credentials=CredentialRef(file=write_secret(tmp_path, "auth", "not-the-key-1")))
    with pytest.raises(EquipmentAuthFailed, match="refused the SNMPv3 credentials of 'dunning'"):
        await SnmpAdapter(wrong).suspend(request("sw-v3"))
    assert await agent.admin_status(41) == {41: UP}


async def test_a_wrong_v2c_community_looks_like_silence_and_is_retryable(agent, secrets, tmp_path):
    wrong = v2c(agent, secrets, [41], credentials=CredentialRef(file=write_secret(tmp_path, "community", "public")))
    with pytest.raises(EquipmentUnreachable, match="no answer .*the community is wrong") as caught:
        await SnmpAdapter(wrong).suspend(request("sw-v2c"))
    assert caught.value.retryable
    assert await agent.admin_status(41) == {41: UP}


async def test_a_port_the_agent_does_not_have_is_a_configuration_error(agent, secrets):
    with pytest.raises(EquipmentMisconfigured, match="no port with ifIndex 99"):
        await SnmpAdapter(v2c(agent, secrets, [41, 99])).suspend(request("sw-v2c"))
    assert await agent.admin_status(41) == {41: UP}


@pytest.mark.parametrize("extension", ["blumenthal", "reeder"])
async def test_aes_256_with_the_agents_key_extension(agent, secrets, extension):
    user = agent.aes256_users[extension]
    entry = v3(
        agent, secrets, [41], user=user, auth_protocol="sha", priv_protocol="aes256", aes_key_extension=extension
    )
    assert await SnmpAdapter(entry).status() == "up"


async def test_aes_256_with_the_other_key_extension_is_a_clear_error_not_silence(agent, secrets):
    entry = v3(agent, secrets, [41], user=agent.aes256_users["reeder"], auth_protocol="sha", priv_protocol="aes256")
    # snmpsim reports the decryption error (net-snmp stays silent: see test_equipment_snmpd.py)
    with pytest.raises(EquipmentAuthFailed, match="aes_key_extension is 'blumenthal'; try 'reeder'") as caught:
        await SnmpAdapter(entry).suspend(request("sw-v3"))
    assert not caught.value.retryable
    assert await agent.admin_status(41) == {41: UP}


async def test_a_v3_agent_that_does_not_answer_even_discovery_is_unreachable_and_retried(agent, secrets):
    nobody = v3(agent, secrets, [41], endpoint=f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}")
    with pytest.raises(EquipmentUnreachable, match="no answer from") as caught:
        await SnmpAdapter(nobody).suspend(request("sw-v3"))
    assert caught.value.retryable
