"""TLS trust for the HTTP peers (Redfish, equipment and notice webhooks): a configured CA, or the
default store; for BMCs also a pinned certificate fingerprint and a name to verify against.

Contexts are built once per process (per CA file and its modification time): loading a trust store
costs more than the request it secures, and one context serves any number of connections.
"""

from __future__ import annotations

import functools
import hashlib
import re
import ssl
from pathlib import Path

import httpcore
import httpx

# OpenSSL's verify codes for a certificate that is valid but names another host or address
_NAME_MISMATCH_CODES = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def tls_verification(ca_file: Path | None, verify_tls: bool = True) -> ssl.SSLContext | bool:
    """What httpx verifies a server with: the configured CA, the default trust store, or nothing."""
    return _trusted(ca_file) if verify_tls else False


def _trusted(ca_file: Path | None) -> ssl.SSLContext:
    """A context checking chain and name against the configured CA, or the default trust store."""
    return _trusting(str(ca_file), ca_file.stat().st_mtime_ns) if ca_file else _default_trust()


@functools.cache
def _default_trust() -> ssl.SSLContext:
    """httpx's own default (certifi's CA bundle)."""
    return httpx.create_ssl_context()


@functools.lru_cache(maxsize=64)
def _trusting(ca_file: str, modified_ns: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


@functools.cache
def _pin_only() -> ssl.SSLContext:
    """No chain or name check: the pinned fingerprint, checked after the handshake, is the trust."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def normalise_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits, from ``AB:CD:…`` or plain hex; ValueError otherwise."""
    digits = re.sub(r"[\s:]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise ValueError(
            "a SHA-256 fingerprint is 64 hex digits, e.g. 'AB:CD:…' as `openssl x509 -fingerprint -sha256` prints"
        )
    return digits


def certificate_fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as ``AB:CD:…``."""
    return _colons(hashlib.sha256(der).hexdigest())


class FingerprintMismatch(httpcore.ConnectError):
    """The server's certificate is not the pinned one (raised before any request is sent)."""


class _PinnedStream(httpcore.AsyncNetworkStream):
    """A TCP stream whose TLS handshake must show the pinned certificate."""

    def __init__(self, stream: httpcore.AsyncNetworkStream, pin: str) -> None:
        self._stream, self._pin = stream, pin

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)

    async def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.AsyncNetworkStream:
        secured = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        der = secured.get_extra_info("ssl_object").getpeercert(binary_form=True) or b""
        if hashlib.sha256(der).hexdigest() != self._pin:
            await secured.aclose()
            raise FingerprintMismatch(
                f"its SHA-256 fingerprint is {certificate_fingerprint(der)}, not the pinned {_colons(self._pin)}"
            )
        return secured


def _colons(hex_digits: str) -> str:
    return ":".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2)).upper()


class _PinningBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, pin: str) -> None:
        self._backend, self._pin = httpcore.AnyIOBackend(), pin

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _PinnedStream(stream, self._pin)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def verified_transport(
    ca_file: Path | None, verify_tls: bool = True, pinned: str | None = None, check_chain_and_name: bool = True
) -> httpx.AsyncHTTPTransport:
    """An httpx transport verifying the chain and name (unless told not to) and, if ``pinned``, the
    certificate's SHA-256 fingerprint.

    The fingerprint is checked right after the handshake, before a request (and its credentials)
    is sent. httpx has no public hook for the network backend, so the transport's pool is rebuilt
    with one that checks it.
    """
    if pinned is None:
        return httpx.AsyncHTTPTransport(verify=tls_verification(ca_file, verify_tls))
    context = _trusted(ca_file) if check_chain_and_name else _pin_only()
    transport = httpx.AsyncHTTPTransport(verify=context)
    transport._pool = httpcore.AsyncConnectionPool(ssl_context=context, network_backend=_PinningBackend(pinned))
    return transport


def untrusted_certificate(exc: BaseException) -> bool:
    """True if a connection failed on the server's certificate (not trusted, another name, not the pinned one)."""
    return tls_failure(exc) is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc)


def tls_failure(exc: BaseException) -> tuple[str, str] | None:
    """Why a TLS handshake failed, if it did: ``("pin", …)``, ``("name", …)`` or ``("untrusted", …)``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, FingerprintMismatch):
            return "pin", str(seen)
        if isinstance(seen, ssl.SSLCertVerificationError):
            kind = "name" if seen.verify_code in _NAME_MISMATCH_CODES else "untrusted"
            return kind, seen.verify_message or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
