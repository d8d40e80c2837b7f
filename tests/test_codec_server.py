"""The codec server on uvicorn on a loopback port, driven over HTTP as the Temporal UI and CLI drive it."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from api.codec_server import MAX_BODY_BYTES, serve_codec
from client.codec import ENCODING, AesGcmCodec

UI_ORIGIN = "http://localhost:8233"
NAME, EMAIL = "Ilinca Zamfirescu-Vlad", "ilinca.zv@codec-test.example"
CODEC = AesGcmCodec({"k2": os.urandom(32), "k1": os.urandom(32)}, "k2")
CONTACT = Payload(metadata={"encoding": b"json/plain"}, data=f'{{"name": "{NAME}", "email": "{EMAIL}"}}'.encode())
FROM_UI = {"Origin": UI_ORIGIN, "X-Namespace": "default", "Content-Type": "application/json"}


@asynccontextmanager
async def codec_server(token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The codec server on a free loopback port; yields an HTTP client for it."""
    stop, started = asyncio.Event(), asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        serve_codec("127.0.0.1", 0, CODEC, [UI_ORIGIN], stop, token=token, on_started=started.set_result)
    )
    try:
        url = await asyncio.wait_for(asyncio.shield(started), timeout=10)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield http
    finally:
        stop.set()
        await asyncio.wait_for(serving, timeout=10)


def as_json(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def from_json(response: httpx.Response) -> list[Payload]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return list(json_format.Parse(response.content, Payloads()).payloads)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with codec_server() as client:
        yield client


async def test_decode_returns_the_clear_payloads_the_ui_shows(http: httpx.AsyncClient) -> None:
    stored = await CODEC.encode([CONTACT, Payload(metadata={"encoding": b"binary/null"})])
    assert all(p.metadata["encoding"] == ENCODING for p in stored)

    response = await http.post("/decode", content=as_json(*stored), headers=FROM_UI)

    assert from_json(response) == [CONTACT, Payload(metadata={"encoding": b"binary/null"})]
    assert response.headers["access-control-allow-origin"] == UI_ORIGIN


async def test_only_the_last_path_segment_selects_the_operation(http: httpx.AsyncClient) -> None:
    stored = await CODEC.encode([CONTACT])

    response = await http.post("/default/decode", content=as_json(*stored), headers=FROM_UI)

    assert from_json(response) == [CONTACT]
    assert (await http.post("/default/transcode", content=as_json(CONTACT))).status_code == 404


async def test_encode_round_trips_through_decode(http: httpx.AsyncClient) -> None:
    encoded = from_json(await http.post("/encode", content=as_json(CONTACT), headers=FROM_UI))

    assert [p.metadata["encoding"] for p in encoded] == [ENCODING]
    assert NAME.encode() not in encoded[0].SerializeToString()
    assert from_json(await http.post("/decode", content=as_json(*encoded), headers=FROM_UI)) == [CONTACT]


async def test_undecodable_payloads_and_bodies_are_bad_requests(http: httpx.AsyncClient) -> None:
    (foreign,) = await AesGcmCodec({"old": os.urandom(32)}, "old").encode([CONTACT])

    unknown_key = await http.post("/decode", content=as_json(foreign), headers=FROM_UI)
    not_payloads = await http.post("/decode", content='{"payloads": 3}', headers=FROM_UI)

    assert unknown_key.status_code == 400 and "'old', which is not configured" in unknown_key.json()["detail"]
    assert not_payloads.status_code == 400


async def test_cors_preflight_is_answered_for_the_ui_origin_only(http: httpx.AsyncClient) -> None:
    def preflight(origin: str) -> dict[str, str]:
        return {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace",
        }

    allowed = await http.options("/decode", headers=preflight(UI_ORIGIN))
    other = await http.options("/decode", headers=preflight("http://evil.example"))

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "x-namespace" in allowed.headers["access-control-allow-headers"].lower()
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


async def test_with_a_token_only_the_right_bearer_gets_answers() -> None:
    async with codec_server(token="s3cret-codec-token") as http:
        stored = as_json(*await CODEC.encode([CONTACT]))

        missing = await http.post("/decode", content=stored, headers=FROM_UI)
        wrong = await http.post("/decode", content=stored, headers={**FROM_UI, "Authorization": "Bearer guess"})
        right = await http.post(
            "/decode", content=stored, headers={**FROM_UI, "Authorization": "Bearer s3cret-codec-token"}
        )
        preflight = await http.options(
            "/decode",
            headers={
                "Origin": UI_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )

    assert missing.status_code == 401 and wrong.status_code == 401
    assert NAME not in wrong.text
    assert from_json(right) == [CONTACT]
    assert preflight.status_code == 200  # browsers send preflights without credentials


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_only_json_bodies_are_taken(http: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {key: value for key, value in FROM_UI.items() if key != "Content-Type"}
    if content_type:
        headers["Content-Type"] = content_type
    refused = await http.post("/encode", content=as_json(CONTACT), headers=headers)
    assert refused.status_code == 415 and "application/json" in refused.json()["detail"]
    with_charset = {**FROM_UI, "Content-Type": "application/json; charset=utf-8"}
    assert len(from_json(await http.post("/encode", content=as_json(CONTACT), headers=with_charset))) == 1


async def test_a_body_over_4_mib_is_refused_and_the_largest_payload_passes(http: httpx.AsyncClient) -> None:
    largest = Payload(metadata={"encoding": b"binary/plain"}, data=os.urandom(2 * 1000 * 1000))  # Temporal's limit
    body = as_json(largest).encode()
    assert len(body) < MAX_BODY_BYTES
    assert from_json(await http.post("/encode", content=body, headers=FROM_UI))[0].metadata["encoding"] == ENCODING

    too_large = b" " * (MAX_BODY_BYTES - len(body) + 1) + body  # still JSON, one byte over
    declared = await http.post("/encode", content=too_large, headers=FROM_UI)
    assert declared.status_code == 413 and str(MAX_BODY_BYTES) in declared.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(too_large), 1 << 20):
            yield too_large[start : start + (1 << 20)]

    streamed = await http.post("/encode", content=chunks(), headers=FROM_UI)
    assert streamed.status_code == 413


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "codec.example"])
async def test_beyond_loopback_it_does_not_start_without_a_token(host: str) -> None:
    with pytest.raises(ValueError, match="set DUNNING_CODEC_TOKEN"):
        await serve_codec(host, 0, CODEC, [UI_ORIGIN], asyncio.Event())


async def test_a_port_in_use_is_an_error_not_an_exit() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port}"):
            await asyncio.wait_for(serve_codec("127.0.0.1", port, CODEC, [UI_ORIGIN], asyncio.Event()), timeout=10)
