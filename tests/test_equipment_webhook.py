"""The webhook adapter against a controller on loopback that checks signatures itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.equipment.adapter import EquipmentAuthFailed, EquipmentUnreachable, Reading
from activities.equipment.registry import CredentialRef, WebhookEquipment
from activities.equipment.webhook import WebhookAdapter
from tests.equipment_peers import ControllerPeer, controller_peer, free_port, write_secret
from workflows.models import EquipmentRequest


@pytest.fixture(scope="module")
def controller() -> Iterator[ControllerPeer]:
    with controller_peer() as peer:
        yield peer


@pytest.fixture(scope="module")
def secret_file(controller: ControllerPeer, tmp_path_factory) -> Path:
    return write_secret(tmp_path_factory.mktemp("secrets"), "webhook", controller.secret)


def equipment(controller: ControllerPeer, secret_file: Path, equipment_id: str, **overrides: Any) -> WebhookEquipment:
    fields: dict[str, Any] = {
        "id": equipment_id,
        "customer_id": "CUST-1",
        "kind": "webhook",
        "endpoint": controller.url,
        "credentials": CredentialRef(file=secret_file),
        "request_timeout_s": 2,
    }
    return WebhookEquipment(**{**fields, **overrides})


def request(equipment_id: str, step: str) -> EquipmentRequest:
    return EquipmentRequest(
        idempotency_key=f"invoice-INV-1/{step}/{equipment_id}",
        equipment_id=equipment_id,
        customer_id="CUST-1",
        invoice_id="INV-1",
        reason="unpaid at the suspension stage",
        requested_by="invoice-INV-1",
    )


async def test_suspend_is_one_signed_call_and_again_changes_nothing(controller, secret_file):
    adapter = WebhookAdapter(equipment(controller, secret_file, "fw-1"))
    cut = request("fw-1", "suspend")

    assert await adapter.suspend(cut) == Reading(changed=True, state="suspended")
    assert controller.state("fw-1") == "suspended"
    [call] = controller.calls_to("fw-1", "suspend")
    assert isinstance(call.pop("at"), float)  # when the controller got it (the fault checks' clock)
    assert call == {
        "action": "suspend",
        "equipment_id": "fw-1",
        "customer_id": "CUST-1",
        "invoice_id": "INV-1",
        "reason": "unpaid at the suspension stage",
        "idempotency_key": cut.idempotency_key,
    }

    assert await adapter.suspend(cut) == Reading(changed=False, state="suspended")
    assert controller.calls_per_key[cut.idempotency_key] == 1
    assert controller.bad_signatures == 0


async def test_restore_and_status(controller, secret_file):
    adapter = WebhookAdapter(equipment(controller, secret_file, "fw-2"))
    await adapter.suspend(request("fw-2", "suspend"))
    assert await adapter.status() == "suspended"

    assert await adapter.restore(request("fw-2", "restore")) == Reading(changed=True, state="active")
    assert controller.state("fw-2") == "active"
    assert await adapter.status() == "active"
    assert await adapter.restore(request("fw-2", "restore")) == Reading(changed=False, state="active")
    assert len(controller.calls_to("fw-2", "restore")) == 1


async def test_a_wrong_secret_is_refused_by_the_controller_and_changes_nothing(controller, tmp_path):
    wrong = equipment(controller, write_secret(tmp_path, "wrong", "not-the-secret"), "fw-3")
    before = controller.bad_signatures
    with pytest.raises(EquipmentAuthFailed, match="refused the signature \\(HTTP 401\\)"):
        await WebhookAdapter(wrong).suspend(request("fw-3", "suspend"))
    assert controller.bad_signatures == before + 1
    assert controller.state("fw-3") == "active"
    assert controller.calls_to("fw-3") == []


async def test_a_controller_that_does_not_answer_is_retryable(controller, secret_file):
    closed = equipment(controller, secret_file, "fw-4", endpoint=f"http://127.0.0.1:{free_port()}/dunning")
    with pytest.raises(EquipmentUnreachable, match="cannot connect") as caught:
        await WebhookAdapter(closed).suspend(request("fw-4", "suspend"))
    assert caught.value.retryable
