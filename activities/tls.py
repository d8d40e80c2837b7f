"""TLS trust for the HTTP peers (Redfish, equipment and notice webhooks): a configured CA, or the
default store.

Contexts are built once per process (per CA file and its modification time): loading a trust store
costs more than the request it secures, and one context serves any number of connections.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

import httpx


def tls_verification(ca_file: Path | None, verify_tls: bool = True) -> ssl.SSLContext | bool:
    """What httpx verifies a server with: the configured CA, the default trust store, or nothing."""
    if not verify_tls:
        return False
    return _trusting(str(ca_file), ca_file.stat().st_mtime_ns) if ca_file else _default_trust()


@functools.cache
def _default_trust() -> ssl.SSLContext:
    """httpx's own default (certifi's CA bundle)."""
    return httpx.create_ssl_context()


@functools.lru_cache(maxsize=64)
def _trusting(ca_file: str, modified_ns: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def untrusted_certificate(exc: BaseException) -> bool:
    """True if a connection failed because the server's certificate was not trusted."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)
