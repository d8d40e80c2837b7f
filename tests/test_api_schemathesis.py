"""Schemathesis against the served OpenAPI schema: generated requests, valid and invalid, to every
operation, with an ops token (and, for the payment webhook, a valid signature); no answer may be a
server error (5xx).

The requests run in a thread (schemathesis calls block) while the stack serves them on the test's
event loop. The schema's examples come first, so the fuzzing also reaches a real invoice's workflow.
"""

from __future__ import annotations

import asyncio
import json
import traceback
from collections import defaultdict

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from temporalio.service import RPCError, RPCStatusCode

from api.examples import CUSTOMER_ID as EXAMPLE_CUSTOMER
from tests.api_stack import OPS_TOKEN, ApiStack, signed
from workflows.models import customer_workflow_id

EXAMPLES_PER_OPERATION = 40
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
WEBHOOK = "/webhooks/payments"
JSON_VALUES = (dict, list, str, int, float, bool, type(None))
# POST /invoices/import takes JSON Lines: its generated string bodies go on the wire as text
schemathesis.serializer.alias(["application/jsonl", "application/x-ndjson"], "text/plain")


def send(case: schemathesis.Case, base_url: str) -> requests.Response:
    """The generated request; one to the webhook is signed, so that its body is what gets tested."""
    if case.operation.path == WEBHOOK and isinstance(case.body, JSON_VALUES):
        raw, headers = signed(json.dumps(case.body).encode())
        return requests.post(base_url + WEBHOOK, data=raw, headers=headers, timeout=30)
    return case.call(base_url=base_url, headers={"Authorization": f"Bearer {OPS_TOKEN}"}, timeout=30)


def fuzz(base_url: str) -> tuple[list[str], dict[str, set[int]]]:
    """Every operation with its schema examples first, in the schema's order, then generated cases: the reports
    of those that failed, and the statuses seen. (Whether generation itself draws an example depends on its
    seed, which follows the schema: the examples are sent on their own so that a real invoice exists.)"""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    statuses: dict[str, set[int]] = defaultdict(set)
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for example in operation.get_strategies_from_examples():
            _run_cases(example, operation, base_url, statuses, failures, "example", max_examples=1)
    for operation in operations:
        for mode in MODES:
            _run_cases(
                operation.as_strategy(generation_mode=mode), operation, base_url, statuses, failures, mode.value
            )
    return failures, statuses


def _run_cases(
    strategy: SearchStrategy,
    operation: APIOperation,
    base_url: str,
    statuses: dict[str, set[int]],
    failures: list[str],
    label: str,
    max_examples: int = EXAMPLES_PER_OPERATION,
) -> None:
    """Send what ``strategy`` draws (``max_examples`` cases), recording statuses and any failure."""

    @given(case=strategy)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case: schemathesis.Case) -> None:
        response = send(case, base_url)
        statuses[operation.label].add(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    try:
        no_server_error()
    except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
        return
    except Exception:  # noqa: BLE001 - collect every operation's failure, then report them all
        failures.append(f"{operation.label} ({label}):\n{traceback.format_exc(limit=3)}")


# schemathesis's own strategies use `random`; not this test's concern
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_no_generated_request_gets_a_server_error(api_stack: ApiStack):
    await _examples_customer_on_this_stack(api_stack)
    failures, statuses = await asyncio.wait_for(asyncio.to_thread(fuzz, api_stack.url), timeout=240)
    assert not failures, "\n\n".join(failures)
    # the fuzzing went past validation: the example invoice was started and acted on, the webhook took a payment
    assert 201 in statuses["POST /invoices"], dict(statuses)
    assert 200 in statuses["POST /invoices/{invoice_id}/disputes"]
    assert statuses[f"POST {WEBHOOK}"] & {200, 202}
    assert 200 in statuses["POST /invoices/import"]


async def _examples_customer_on_this_stack(api_stack: ApiStack) -> None:
    """The schema's examples pay the example customer: a customer workflow another test module started on its own
    task queue (with no worker left) would never answer here, so it is ended first and this stack starts its own."""
    handle = api_stack.client.get_workflow_handle(customer_workflow_id(EXAMPLE_CUSTOMER))
    try:
        await handle.terminate(reason="another test module's customer; this test starts its own")
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
