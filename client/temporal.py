"""The Temporal client, with the pydantic data converter (and, when keys are set, encryption) every part shares;
its failures are bounded (``client.failures``)."""

import asyncio
from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import TLSConfig

from client.codec import codec_from_settings, with_encryption
from client.failures import bounded_failures
from client.settings import Settings
from client.telemetry import temporal_plugins, temporal_runtime


async def connect(settings: Settings) -> Client:
    """Connect to the configured Temporal frontend and namespace (TLS or an API key for a real cluster)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        runtime=temporal_runtime(settings.temporal_metrics_bind),
        plugins=temporal_plugins(),
        tls=tls_config(settings),
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
    )


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads, encrypted when ``codec_keys`` are set, and failures of a bounded size (an activity's
    failure keeps its reason in Temporal: ``client.failures``)."""
    return bounded_failures(with_encryption(pydantic_data_converter, codec_from_settings(settings.codec_keys)))


def tls_config(settings: Settings) -> TLSConfig | bool:
    """mTLS with the given files, plain TLS, or none; an API key always goes over TLS."""
    files = (settings.temporal_tls_ca_file, settings.temporal_tls_cert_file, settings.temporal_tls_key_file)
    if any(files) or settings.temporal_tls_server_name:
        ca, cert, key = (path.read_bytes() if path else None for path in files)
        return TLSConfig(
            server_root_ca_cert=ca, client_cert=cert, client_private_key=key, domain=settings.temporal_tls_server_name
        )
    return settings.temporal_tls or settings.temporal_api_key is not None


def take_start_outcome(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """Mark an update-with-start's start outcome as seen; never waits.

    The SDK also sets a start that failed (the call cancelled or refused before the start was seen) on the
    operation. Asked for by nobody, asyncio logs it as "Future exception was never retrieved" whenever the
    operation is collected, onto whatever runs then (a CLI command's stderr, say)."""
    outcome = getattr(start, "_workflow_handle", None)  # where the SDK keeps it
    if isinstance(outcome, asyncio.Future) and outcome.done() and not outcome.cancelled():
        outcome.exception()
