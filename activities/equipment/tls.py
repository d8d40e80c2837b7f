"""TLS trust for the HTTP adapters (Redfish, webhook): a configured CA, or the system's store."""

from __future__ import annotations

import ssl
from pathlib import Path


def tls_verification(ca_file: Path | None, verify_tls: bool) -> ssl.SSLContext | bool:
    """What httpx verifies a server with: the configured CA, the system's trust store, or nothing."""
    if not verify_tls:
        return False
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else True


def untrusted_certificate(exc: BaseException) -> bool:
    """True if a connection failed because the server's certificate was not trusted."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)
