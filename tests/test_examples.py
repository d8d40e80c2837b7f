"""The example files a new user starts from load with the service's own loaders and fit together."""

from pathlib import Path

from activities.equipment.registry import Registry
from activities.notices.channels import load_channels
from activities.standing import StandingSettings
from workflows.models import Invoice, PaymentPlan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_the_example_invoice_names_only_equipment_of_its_customer_in_the_registry():
    invoice = Invoice.model_validate_json((EXAMPLES / "invoice.json").read_text())
    registry = Registry.load(EXAMPLES / "equipment.toml")
    for equipment_id in invoice.terms.equipment_ids:
        assert registry.resolve(equipment_id, invoice.customer_id).customer_id == invoice.customer_id


def test_the_example_plan_channels_and_customer_settings_load():
    assert PaymentPlan.model_validate_json((EXAMPLES / "payment-plan.json").read_text()).instalments
    channels = load_channels(EXAMPLES / "channels.toml")
    assert channels.for_customer("CUST-1").channels == ["email", "webhook"]
    assert channels.for_customer("someone-else").channels == ["email"]
    standing = StandingSettings.load(EXAMPLES / "customers.toml")
    assert standing.for_customer("CUST-1").deposit_percent == 30
    assert standing.for_customer("someone-else").deposit_percent == 50
