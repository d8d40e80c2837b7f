"""Ops control of a customer over the API and the CLI, on the dev server with a real worker and Postgres: only
the ops role may pause, resume or exclude from cuts; bad input is 422 and reaches no workflow; an invoice of
the paused customer stops escalating."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from tests.api_stack import INTEGRATION_TOKEN, METRICS_TOKEN, ApiStack, assert_problem, eventually, invoice_json
from tests.cli_helpers import cli_env, dunning, failed, succeeded
from workflows.invoice import InvoiceWorkflow
from workflows.models import invoice_workflow_id

PAUSE = {"reason": "CFO agreed a call on Friday", "requested_by": "maria"}


async def test_ops_pause_resume_and_exclude_a_customer_and_nobody_else_may(api_stack: ApiStack, dev_env):
    customer = f"CUST-{uuid.uuid4().hex[:8]}"
    async with api_stack.http() as ops:
        invoice = invoice_json(customer)
        assert (await ops.post("/invoices", json=invoice)).status_code == 201
        handle = api_stack.client.get_workflow_handle(invoice_workflow_id(invoice["invoice_id"]))

        async with api_stack.http(INTEGRATION_TOKEN) as integration, api_stack.http(METRICS_TOKEN) as scraper:
            for http in (integration, scraper):
                assert (await http.post(f"/customers/{customer}/pause", json=PAUSE)).status_code == 403
                assert (await http.get(f"/customers/{customer}/control")).status_code == 403
        async with api_stack.http(None) as anonymous:
            assert (await anonymous.post(f"/customers/{customer}/resume", json={"requested_by": "x"})).status_code == 401

        past = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
        assert_problem(await ops.post(f"/customers/{customer}/pause", json={**PAUSE, "until": past}), 422, "validation-failed", "until")
        far = (datetime.now(timezone.utc) + timedelta(days=400)).isoformat()
        assert_problem(await ops.post(f"/customers/{customer}/pause", json={**PAUSE, "until": far}), 422, "validation-failed")
        assert_problem(await ops.post(f"/customers/{customer}/pause", json={**PAUSE, "reason": ""}), 422, "validation-failed")
        assert (await ops.get(f"/customers/{customer}/control")).json()["decisions"] == []

        until = (datetime.now(timezone.utc) + timedelta(days=7)).isoformat()
        paused = await ops.post(f"/customers/{customer}/pause", json={**PAUSE, "until": until})
        assert paused.status_code == 200, paused.text
        assert paused.json()["pause"]["requested_by"] == "maria"
        await eventually(lambda: _paused(handle), timeout=20)

        resumed = await ops.post(f"/customers/{customer}/resume", json={"requested_by": "maria", "reason": "call held"})
        assert resumed.status_code == 200 and resumed.json()["pause"] is None
        excluded = await ops.post(f"/customers/{customer}/cuts", json={"excluded": True, "reason": "hospital", "requested_by": "li"})
        assert excluded.json()["cuts_excluded"] is True
        decisions = (await ops.get(f"/customers/{customer}/control")).json()["decisions"]
        assert [(d["what"].split(" ")[0], d["requested_by"], d["reason"]) for d in decisions] == [
            ("paused", "maria", PAUSE["reason"]),
            ("resumed", "maria", "call held"),
            ("excluded", "li", "hospital"),
        ]

    env = cli_env(dev_env, api_stack.settings.task_queue)
    printed = succeeded(await dunning(env, "customer", "pause", customer, "--reason", "audit", "--by", "ana"))
    assert printed.startswith("paused since ") and "(ana: audit)" in printed and "excluded from automatic cuts" in printed
    failed(await dunning(env, "customer", "pause", customer, "--reason", "x", "--until", "2020-01-01T00:00:00Z"), "not in the future")
    assert succeeded(await dunning(env, "customer", "resume", customer)).splitlines()[0] == "not paused"
    assert succeeded(await dunning(env, "customer", "include-in-cuts", customer, "--reason", "done")).splitlines()[1] == "in automatic cuts"


async def _paused(handle) -> bool:
    return (await handle.query(InvoiceWorkflow.status)).next_action is None
