"""The SNMP adapter against a real net-snmp snmpd serving veth links in a network namespace of its own.

Every state is read back with ``ip -n <ns> link show`` or net-snmp's ``snmpget``, never the adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.equipment.adapter import EquipmentMisconfigured, Reading
from activities.equipment.registry import CredentialRef, SnmpEquipment
from activities.equipment.snmp import SnmpAdapter
from tests.equipment_peers import write_secret
from tests.snmpd_peer import SnmpdPeer, Unavailable, snmpd_peer
from workflows.models import EquipmentRequest

UP, DOWN = 1, 2
# each test has its own links; "spare" is never configured and must never change
LINKS = {"spare": True, "v2a": True, "v2b": True, "v3a": True, "v3b": False, "aes256": True, "wrong": True}


@pytest.fixture(scope="module")
def agent() -> Iterator[SnmpdPeer]:
    try:
        with snmpd_peer(LINKS) as peer:
            yield peer
    except Unavailable as exc:
        pytest.skip(f"no snmpd in a network namespace here: {exc}")


@pytest.fixture(scope="module")
def secrets(agent: SnmpdPeer, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("snmpd-secrets")
    return {
        "community": write_secret(folder, "community", agent.community),
        "auth": write_secret(folder, "auth", agent.auth_key),
        "priv": write_secret(folder, "priv", agent.priv_key),
    }


def entry(agent: SnmpdPeer, secrets: dict[str, Path], links: list[str], **fields: Any) -> SnmpEquipment:
    version = fields.pop("version", "3")
    common: dict[str, Any] = {
        "id": f"sw-netns-v{version}",
        "customer_id": "CUST-1",
        "kind": "snmp",
        "endpoint": agent.endpoint,
        "ports": [agent.links[name] for name in links],
        "version": version,
        "request_timeout_s": 1.0,
        "retries": 1,
    }
    if version == "2c":
        common["credentials"] = CredentialRef(file=secrets["community"])
    else:
        common |= {
            "user": agent.user,
            "auth_protocol": "sha256",
            "credentials": CredentialRef(file=secrets["auth"]),
            "priv_protocol": "aes128",
            "priv_credentials": CredentialRef(file=secrets["priv"]),
        }
    return SnmpEquipment(**{**common, **fields})


def request(equipment_id: str) -> EquipmentRequest:
    return EquipmentRequest(
        idempotency_key=f"test-netns-{equipment_id}",
        equipment_id=equipment_id,
        customer_id="CUST-1",
        invoice_id="INV-1",
        reason="unpaid at the suspension stage",
        requested_by="invoice-INV-1",
    )


async def test_v2c_takes_the_links_down_and_up_as_ip_link_shows(agent, secrets):
    adapter = SnmpAdapter(entry(agent, secrets, ["v2a", "v2b"], version="2c"))

    assert await adapter.suspend(request("sw-netns-v2c")) == Reading(changed=True, state="down")
    assert agent.admin_up("spare", "v2a", "v2b") == {"spare": True, "v2a": False, "v2b": False}

    assert await adapter.restore(request("sw-netns-v2c")) == Reading(changed=True, state="up")
    assert agent.snmpget_admin_status("spare", "v2a", "v2b") == {"spare": UP, "v2a": UP, "v2b": UP}


async def test_v3_auth_priv_aes_takes_the_links_down_and_leaves_a_link_that_was_down_down(agent, secrets):
    adapter = SnmpAdapter(entry(agent, secrets, ["v3a", "v3b"]))
    assert agent.snmpget_admin_status("v3a", "v3b") == {"v3a": UP, "v3b": DOWN}

    cut = await adapter.suspend(request("sw-netns-v3"))
    assert cut == Reading(changed=True, state="down")
    assert agent.snmpget_admin_status("spare", "v3a", "v3b") == {"spare": UP, "v3a": DOWN, "v3b": DOWN}

    before = {str(agent.links["v3a"]): "up", str(agent.links["v3b"]): "down"}
    back = await adapter.restore(request("sw-netns-v3"), before)
    assert back.changed
    assert agent.admin_up("spare", "v3a", "v3b") == {"spare": True, "v3a": True, "v3b": False}


async def test_aes_256_keys_are_extended_as_net_snmp_does_by_default(agent, secrets):
    aes256 = entry(agent, secrets, ["aes256"], user=agent.aes256_user, auth_protocol="sha", priv_protocol="aes256")
    adapter = SnmpAdapter(aes256)
    assert await adapter.suspend(request("sw-netns-v3")) == Reading(changed=True, state="down")
    assert agent.admin_up("aes256") == {"aes256": False}
    assert await adapter.restore(request("sw-netns-v3")) == Reading(changed=True, state="up")
    assert agent.admin_up("aes256") == {"aes256": True}


async def test_the_other_key_extension_is_a_clear_error_and_not_retried(agent, secrets):
    """net-snmp drops a request it cannot decrypt: silence after discovery names the key and the variant."""
    reeder = entry(
        agent, secrets, ["wrong"], user=agent.aes256_user, auth_protocol="sha", priv_protocol="aes256",
        aes_key_extension="reeder",
    )
    with pytest.raises(EquipmentMisconfigured, match="aes_key_extension is 'reeder'; try 'blumenthal'") as caught:
        await SnmpAdapter(reeder).suspend(request("sw-netns-v3"))
    assert not caught.value.retryable
    assert "answered the SNMPv3 discovery but not the request" in str(caught.value)
    assert agent.snmpget_admin_status("wrong") == {"wrong": UP}


async def test_a_wrong_privacy_key_is_a_clear_error_and_not_retried(agent, secrets, tmp_path):
    wrong_key = CredentialRef(file=write_secret(tmp_path, "priv", "not-the-priv-key"))
    wrong = entry(agent, secrets, ["wrong"], priv_credentials=wrong_key)
    with pytest.raises(EquipmentMisconfigured, match="the privacy key .* is probably wrong") as caught:
        await SnmpAdapter(wrong).suspend(request("sw-netns-v3"))
    assert not caught.value.retryable
    assert agent.admin_up("wrong") == {"wrong": True}
