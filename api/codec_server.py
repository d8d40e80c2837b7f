"""The codec server: the Temporal UI and CLI send it encrypted payloads and show what comes back.

It speaks Temporal's remote codec protocol: ``POST .../encode`` and ``POST .../decode``, each with
a ``temporal.api.common.v1.Payloads`` message in proto3 JSON form as body and answer. Only the last
path segment counts, so it can be mounted under a per-namespace prefix. The UI calls it from the
browser, so it answers CORS for the UI's origins; with a token set, every call must carry
``Authorization: Bearer <token>`` (the CLI's ``--codec-auth``, or a proxy in front of it). It takes
only ``application/json`` bodies (415 otherwise) of at most ``MAX_BODY_BYTES`` (413 beyond).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence

import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from api.serving import serve
from client.codec import PayloadDecryptionError, UnknownKeyError

logger = logging.getLogger(__name__)

CODEC_ERRORS = (UnknownKeyError, PayloadDecryptionError)
# Temporal refuses a payload over 2 MB; its JSON form (base64) is a third larger, and the UI sends a few at once
MAX_BODY_BYTES = 4 * 1024 * 1024


def create_codec_app(codec: PayloadCodec, allowed_origins: Sequence[str], token: str | None = None) -> Starlette:
    """The ASGI app serving ``codec``; browsers may call it from ``allowed_origins`` only."""
    operations: dict[str, Callable[[Sequence[Payload]], Awaitable[list[Payload]]]] = {
        "encode": codec.encode,
        "decode": codec.decode,
    }

    async def apply(request: Request) -> Response:
        operation = operations.get(request.path_params["path"].rstrip("/").rpartition("/")[2])
        if operation is None:
            return _problem(404, "not found: POST .../encode or .../decode")
        if token is not None and not _bearer_matches(request, token):
            return _problem(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return _problem(415, f"send the payloads as application/json, not {media_type or 'a body without a type'}")
        body = await _body_within(request, MAX_BODY_BYTES)
        if body is None:
            return _problem(413, f"the body exceeds the limit of {MAX_BODY_BYTES} bytes")
        try:
            payloads = json_format.Parse(body, Payloads())
        except json_format.ParseError as err:
            return _problem(400, f"the body is not a Payloads message in JSON form: {err}")
        try:
            result = Payloads(payloads=await operation(payloads.payloads))
        except CODEC_ERRORS as err:
            logger.warning("codec server could not decode for namespace %s: %s", request.headers.get("x-namespace"), err)
            return _problem(400, str(err))
        return Response(json_format.MessageToJson(result), media_type="application/json")

    return Starlette(
        routes=[Route("/{path:path}", apply, methods=["POST"])],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=list(allowed_origins),
                allow_methods=["POST"],
                allow_headers=["content-type", "x-namespace", "authorization"],
            )
        ],
    )


def _bearer_matches(request: Request, token: str) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(presented.strip().encode(), token.encode())


async def _body_within(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed ``limit`` bytes (by its Content-Length,
    or while it arrives)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def serve_codec(
    host: str,
    port: int,
    codec: PayloadCodec,
    allowed_origins: Sequence[str],
    stop: asyncio.Event,
    *,
    token: str | None = None,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Serve the codec on ``host:port`` until ``stop`` is set (or the task is cancelled).

    ``on_started`` gets the base URL once it listens; with port 0 it names the port chosen.
    Raises ``ServerStartupError`` (a ``RuntimeError``) if it cannot start (e.g. the port is taken),
    and ``ValueError`` for a host beyond loopback without a token: decoded payloads are customer data.
    """
    if token is None and not _loopback(host):
        raise ValueError(f"the codec server would answer anyone who reaches {host}: set DUNNING_CODEC_TOKEN")
    config = uvicorn.Config(
        create_codec_app(codec, allowed_origins, token), host=host, port=port, lifespan="off", log_level="warning",
        log_config=None,  # its records go through the process's logging (client.logs)
    )
    await serve(config, "codec server", stop, on_started, port_setting="DUNNING_CODEC_PORT")
