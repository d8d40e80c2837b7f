"""Who may set a policy, over real HTTP (issue 20): the integration role names a policy of the policies file
and gives contract terms within its bounds; an inline policy, or terms beyond them, need the ops role.

The stack has no policies file: its one policy is ``standard`` (domain.md's ladder) with the default bounds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from activities.ledger import read_events
from client.invoices import invoice_handle
from tests.api_stack import INTEGRATION_TOKEN, ApiStack, assert_problem, eventually, invoice_json, local_today
from workflows.models import DunningPolicy, Invoice, StageAction

CUT_AT_ONCE = {"stages": [{"action": "suspend", "offset": "PT0S"}], "sending_window": None}


def named(policy_name: str = "standard", **changes: Any) -> dict[str, Any]:
    """An invoice that names its policy instead of giving one."""
    invoice = invoice_json(policy_name=policy_name, **changes)
    del invoice["policy"]
    return invoice


async def nothing_started(stack: ApiStack, invoice_id: str) -> None:
    assert await stack.history_length(invoice_id) == 0
    async with stack.http() as ops:
        assert_problem(await ops.get(f"/invoices/{invoice_id}/status"), 404, "invoice-not-found")


async def started_policy(stack: ApiStack, invoice_id: str) -> DunningPolicy:
    """The policy the invoice was issued with, from its first event."""
    events = await eventually(lambda: read_events(stack.pool, invoice_id))
    return Invoice.model_validate(events[0].data["invoice"]).policy


async def test_the_integration_role_cannot_cut_a_customers_equipment_at_once_but_ops_may_set_the_policy(
    api_stack: ApiStack,
):
    """The scenario of issue 20: an inline `suspend` at PT0S naming the customer's own equipment."""
    terms = {"remote_disconnect_authorized": True, "equipment_ids": ["fw-other-customer"]}
    invoice = invoice_json("CUST-OTHER", policy=CUT_AT_ONCE, terms=terms)
    async with api_stack.http(INTEGRATION_TOKEN) as integration:
        refused = await integration.post("/invoices", json=invoice)
    problem = assert_problem(refused, 403, "forbidden", "needs the ops role", "an inline policy", "policy_name (standard)")
    assert [e["pointer"] for e in problem["errors"]] == ["#/policy"]
    assert "insufficient_scope" in refused.headers["www-authenticate"]
    await nothing_started(api_stack, invoice["invoice_id"])

    inline = invoice_json(policy=CUT_AT_ONCE)  # no equipment: nothing to cut in this test stack
    async with api_stack.http() as ops:
        created = await ops.post("/invoices", json=inline)
    assert created.status_code == 201, created.text
    assert [(s.action.value, s.offset) for s in (await started_policy(api_stack, inline["invoice_id"])).stages] == [
        ("suspend", timedelta(0))
    ]


async def test_the_integration_role_names_a_policy_and_gets_it_whole(api_stack: ApiStack):
    invoice = named("standard")
    async with api_stack.http(INTEGRATION_TOKEN) as integration:
        created = await integration.post("/invoices", json=invoice)
        assert created.status_code == 201, created.text
        assert (await integration.post("/invoices", json=invoice)).status_code == 200  # the same request again
    assert await started_policy(api_stack, invoice["invoice_id"]) == DunningPolicy.default().with_legal_thresholds("EUR")
    description = await invoice_handle(api_stack.client, invoice["invoice_id"]).describe()
    assert "**Policy:** standard: reminder +1d, warning +5d" in (await description.static_details() or "")

    neither = named()
    del neither["policy_name"]
    async with api_stack.http(INTEGRATION_TOKEN) as integration:
        assert (await integration.post("/invoices", json=neither)).status_code == 201
    assert await started_policy(api_stack, neither["invoice_id"]) == DunningPolicy.default().with_legal_thresholds("EUR")


async def test_an_unknown_policy_name_or_a_name_beside_an_inline_policy_is_422(api_stack: ApiStack):
    unknown = named("fast")
    both = {**named("standard"), "policy": CUT_AT_ONCE}
    async with api_stack.http(INTEGRATION_TOKEN) as integration, api_stack.http() as ops:
        problem = assert_problem(
            await integration.post("/invoices", json=unknown), 422, "validation-failed", "unknown policy 'fast'"
        )
        assert [e["pointer"] for e in problem["errors"]] == ["#/policy_name"]
        assert_problem(await ops.post("/invoices", json=unknown), 422, "validation-failed", "unknown policy 'fast'")
        assert_problem(await ops.post("/invoices", json=both), 422, "validation-failed", "not both")
    await nothing_started(api_stack, unknown["invoice_id"])
    await nothing_started(api_stack, both["invoice_id"])


async def test_the_integration_role_cannot_make_an_invoice_cut_sooner_than_its_named_policy(api_stack: ApiStack):
    """`standard` cuts 20 days after the due date: backdating the due date would bring the cut to now; the
    other terms are bounded too. Each is refused with the field named, and nothing starts."""
    today = local_today()
    backdated = named(issue_date=(today - timedelta(days=34)).isoformat(), due_date=(today - timedelta(days=20)).isoformat())
    steep = named(terms={"late_fee_percent_per_month": "10", "fixed_late_fee_minor": 50_000})
    async with api_stack.http(INTEGRATION_TOKEN) as integration:
        problem = assert_problem(
            await integration.post("/invoices", json=backdated), 403, "forbidden", "needs the ops role", "20 days before today"
        )
        assert [e["pointer"] for e in problem["errors"]] == ["#/due_date"]
        problem = assert_problem(await integration.post("/invoices", json=steep), 403, "forbidden", "needs the ops role")
        pointers = [e["pointer"] for e in problem["errors"]]
        assert pointers == ["#/terms/late_fee_percent_per_month", "#/terms/fixed_late_fee_minor"]
    await nothing_started(api_stack, backdated["invoice_id"])
    await nothing_started(api_stack, steep["invoice_id"])

    due_today = named(issue_date=today.isoformat(), due_date=today.isoformat())  # the soonest the integration may
    async with api_stack.http(INTEGRATION_TOKEN) as integration:
        created = await integration.post("/invoices", json=due_today)
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "issued"
    policy = await started_policy(api_stack, due_today["invoice_id"])
    assert policy.stage(StageAction.SUSPEND).offset == timedelta(days=20)  # the cut: 20 days after the due date
