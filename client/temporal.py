"""The Temporal client, with the pydantic data converter (and, when keys are set, encryption) every part shares."""

import functools

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import TLSConfig

from client.codec import codec_from_settings, with_encryption
from client.settings import Settings
from client.telemetry import temporal_runtime, tracing_interceptor


async def connect(settings: Settings) -> Client:
    """Connect to the configured Temporal frontend and namespace (TLS or an API key for a real cluster)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=with_encryption(pydantic_data_converter, codec_from_settings(settings.codec_keys)),
        runtime=temporal_runtime(settings.temporal_metrics_bind),
        interceptors=[_tracing()],
        tls=tls_config(settings),
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
    )


@functools.cache
def _tracing() -> TracingInterceptor:
    """One tracer provider per process, however many clients it connects."""
    return tracing_interceptor()


def tls_config(settings: Settings) -> TLSConfig | bool:
    """mTLS with the given files, plain TLS, or none; an API key always goes over TLS."""
    files = (settings.temporal_tls_ca_file, settings.temporal_tls_cert_file, settings.temporal_tls_key_file)
    if any(files) or settings.temporal_tls_server_name:
        ca, cert, key = (path.read_bytes() if path else None for path in files)
        return TLSConfig(
            server_root_ca_cert=ca, client_cert=cert, client_private_key=key, domain=settings.temporal_tls_server_name
        )
    return settings.temporal_tls or settings.temporal_api_key is not None
