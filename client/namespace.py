"""Preparing a Temporal namespace for the service, and the start-up check that it was prepared.

The embedded stack registers everything by flag; a real cluster gets ``dunning setup`` once, and
every worker refuses to start until the invoice and customer search attributes exist (ops dashboards and the
workflow's own upserts need them).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES


class NotSetUp(RuntimeError):
    """The namespace lacks what the service needs; the message says what and how to fix it."""


async def missing_search_attributes(client: Client, namespace: str) -> list[SearchAttributeKey]:
    """The search attributes (invoice and customer) the namespace does not have (with the right type)."""
    response = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    known = dict(response.custom_attributes)
    return [key for key in SEARCH_ATTRIBUTES if known.get(key.name) != int(key.indexed_value_type)]


async def check_namespace(client: Client, namespace: str) -> None:
    """Raise ``NotSetUp`` naming every missing search attribute (or the missing namespace)."""
    try:
        missing = await missing_search_attributes(client, namespace)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise NotSetUp(f"namespace {namespace!r} does not exist: run `dunning setup`") from err
        raise
    if missing:
        names = ", ".join(f"{key.name} ({IndexedValueType.Name(IndexedValueType.ValueType(key.indexed_value_type))})" for key in missing)
        raise NotSetUp(f"namespace {namespace!r} lacks the search attributes {names}: run `dunning setup`")


async def set_up_namespace(client: Client, namespace: str, retention: timedelta = timedelta(days=90)) -> list[str]:
    """Create the namespace if needed and register the missing search attributes; returns what was done."""
    done = []
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        period = Duration()
        period.FromTimedelta(retention)
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(namespace=namespace, workflow_execution_retention_period=period)
        )
        done.append(f"registered namespace {namespace} (retention {retention.days} days)")
    missing = await _missing_when_ready(client, namespace)
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in missing},
            )
        )
        done.append("registered search attributes " + ", ".join(key.name for key in missing))
    await check_namespace(client, namespace)
    return done


async def _missing_when_ready(client: Client, namespace: str) -> list[SearchAttributeKey]:
    """A new namespace takes a moment to reach every frontend: ask until it answers."""
    for _ in range(50):
        try:
            return await missing_search_attributes(client, namespace)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            await asyncio.sleep(0.2)
    return await missing_search_attributes(client, namespace)
