"""The activities the workflow calls by reference (``workflows.contracts``) are the ones the workers register."""

from __future__ import annotations

import pytest
from temporalio.activity import _Definition  # the SDK's reading of @activity.defn; no public equivalent

from activities.calendar import CalendarActivities
from activities.equipment.activities import EquipmentActivities
from activities.ledger import LedgerActivities
from activities.notices.delivery import NoticeActivities
from activities.service import ServiceActivities
from bench.recording import Recorder
from workflows import contracts

IMPLEMENTATIONS = [
    (contracts.Ledger, LedgerActivities),
    (contracts.Notices, NoticeActivities),
    (contracts.Service, ServiceActivities),
    (contracts.Equipment, EquipmentActivities),
    (contracts.Calendar, CalendarActivities),
] + [(contract, Recorder) for contract in (contracts.Ledger, contracts.Notices, contracts.Service, contracts.Equipment)]


def declared(contract: type) -> dict[str, str]:
    """Method name: activity name, for every activity a class defines."""
    return {
        name: definition.name
        for name in dir(contract)
        if (definition := _Definition.from_callable(getattr(contract, name))) is not None
    }


@pytest.mark.parametrize(("contract", "implementation"), IMPLEMENTATIONS)
def test_each_implementation_registers_its_contracts_activities_under_the_same_names(contract, implementation):
    assert contract in implementation.__mro__
    names = declared(contract)
    assert names, f"{contract.__name__} declares no activity"
    assert {method: declared(implementation)[method] for method in names} == names


def test_the_recording_worker_records_every_activity_the_workflow_calls():
    declarations = [c for c in vars(contracts).values() if isinstance(c, type) and c.__module__ == contracts.__name__]
    called = {name for contract in declarations for name in declared(contract).values()}
    recorded = {_Definition.must_from_callable(fn).name for fn in Recorder().activities}
    assert called == recorded
