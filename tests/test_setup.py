"""`dunning setup` prepares a real cluster's namespace; a worker refuses to start on one that lacks it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from client.namespace import NotSetUp, check_namespace, missing_search_attributes, set_up_namespace
from client.settings import Settings
from tests.cli_helpers import cli_env, dunning, succeeded
from workflows.search_attributes import ALL


async def test_setup_creates_the_namespace_and_search_attributes_once(dev_env: WorkflowEnvironment):
    client, namespace = dev_env.client, f"setup-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotSetUp, match=f"namespace '{namespace}' does not exist: run `dunning setup`"):
        await check_namespace(client, namespace)
    done = await set_up_namespace(client, namespace, timedelta(days=30))
    assert done == [
        f"registered namespace {namespace} (retention 30 days)",
        "registered search attributes " + ", ".join(key.name for key in ALL),
    ]
    await check_namespace(client, namespace)
    assert await missing_search_attributes(client, namespace) == []
    assert await set_up_namespace(client, namespace) == []


async def test_a_namespace_without_search_attributes_is_refused_with_their_names(dev_env: WorkflowEnvironment):
    client, namespace = dev_env.client, f"bare-{uuid.uuid4().hex[:8]}"
    retention = Duration()
    retention.FromTimedelta(timedelta(days=1))
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=namespace, workflow_execution_retention_period=retention)
    )
    with pytest.raises(NotSetUp) as refused:
        await _check_when_visible(client, namespace)
    message = str(refused.value)
    assert all(key.name in message for key in ALL)
    assert "InvoiceState (INDEXED_VALUE_TYPE_KEYWORD)" in message
    assert message.endswith("run `dunning setup`")


async def _check_when_visible(client, namespace: str) -> None:
    """A just-registered namespace may take a moment to be known; then check it."""
    import asyncio

    for _ in range(50):
        try:
            await check_namespace(client, namespace)
            return
        except NotSetUp as err:
            if "does not exist" not in str(err):
                raise
            await asyncio.sleep(0.2)


async def test_worker_refuses_to_start_on_an_unprepared_namespace(dev_env: WorkflowEnvironment):
    from worker.worker import run_worker  # the whole worker, activities and all

    namespace = f"unprepared-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host, temporal_namespace=namespace
    )
    with pytest.raises(NotSetUp, match="run `dunning setup`"):
        await run_worker(settings)


async def test_setup_command_reports_what_it_did(dev_env: WorkflowEnvironment):
    env = {**cli_env(dev_env, "unused"), "DUNNING_TEMPORAL_NAMESPACE": f"cli-{uuid.uuid4().hex[:8]}"}
    first = succeeded(await dunning(env, "setup", "--retention-days", "7"))
    assert "registered namespace" in first and "registered search attributes InvoiceState" in first
    assert succeeded(await dunning(env, "setup")).strip().endswith("already set up")
    refused = await dunning(env, "setup", "--retention-days", "0")
    assert refused.exit_code == 2
    assert "greater than or equal" in " ".join(refused.output.replace("│", " ").split())
