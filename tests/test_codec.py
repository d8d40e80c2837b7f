"""The AES-GCM payload codec: round trip, no clear text, tamper detection, key rotation, the key setting."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from client.codec import (
    ENCODING,
    KEY_ID_METADATA,
    AesGcmCodec,
    KeySpecError,
    PayloadDecryptionError,
    UnknownKeyError,
    codec_from_settings,
    load_keys,
    new_key,
    with_encryption,
)

NAME, EMAIL = "Ilinca Zamfirescu-Vlad", "ilinca.zv@codec-test.example"
K1, K2 = os.urandom(32), os.urandom(32)


def json_payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain", "messageType": b"Contact"}, data=text.encode())


CONTACT = json_payload(f'{{"name": "{NAME}", "email": "{EMAIL}", "amount_minor": 7654321}}')


async def test_round_trip_restores_every_payload_with_its_metadata() -> None:
    codec = AesGcmCodec({"k1": K1}, "k1")
    payloads = [CONTACT, json_payload('"second"'), Payload()]

    decoded = await codec.decode(await codec.encode(payloads))

    assert decoded == payloads


async def test_ciphertext_contains_no_clear_text_and_differs_each_time() -> None:
    codec = AesGcmCodec({"k1": K1}, "k1")

    first, second = await codec.encode([CONTACT, CONTACT])

    for encrypted in (first, second):
        stored = encrypted.SerializeToString()
        for clear in (NAME, EMAIL, "7654321", "Contact", "json/plain"):
            assert clear.encode() not in stored
        assert dict(encrypted.metadata) == {"encoding": ENCODING, KEY_ID_METADATA: b"k1"}
    assert first.data != second.data  # a fresh nonce every time


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda data: data[:20] + bytes([data[20] ^ 1]) + data[21:], id="flipped-bit"),
        pytest.param(lambda data: data[:-1], id="truncated"),
        pytest.param(lambda data: os.urandom(12) + data[12:], id="other-nonce"),
    ],
)
async def test_tampered_ciphertext_is_refused(tamper) -> None:
    codec = AesGcmCodec({"k1": K1}, "k1")
    (encrypted,) = await codec.encode([CONTACT])
    encrypted.data = tamper(encrypted.data)

    with pytest.raises(PayloadDecryptionError, match="k1"):
        await codec.decode([encrypted])


async def test_payload_relabelled_with_another_key_id_is_refused() -> None:
    codec = AesGcmCodec({"k1": K1, "k2": K1}, "k1")  # same key bytes: only the associated data differs
    (encrypted,) = await codec.encode([CONTACT])
    encrypted.metadata[KEY_ID_METADATA] = b"k2"

    with pytest.raises(PayloadDecryptionError):
        await codec.decode([encrypted])


async def test_after_rotation_old_data_decodes_and_new_data_uses_the_new_key() -> None:
    before = AesGcmCodec({"k1": K1}, "k1")
    (old,) = await before.encode([CONTACT])

    after = AesGcmCodec({"k2": K2, "k1": K1}, "k2")
    (new,) = await after.encode([CONTACT])

    assert await after.decode([old]) == [CONTACT]
    assert new.metadata[KEY_ID_METADATA] == b"k2"
    assert await after.decode([new]) == [CONTACT]
    with pytest.raises(UnknownKeyError):
        await before.decode([new])


async def test_unknown_key_id_is_a_clear_error() -> None:
    (encrypted,) = await AesGcmCodec({"k1": K1}, "k1").encode([CONTACT])

    with pytest.raises(UnknownKeyError, match=r"key id 'k1', which is not configured \(known: k2\)"):
        await AesGcmCodec({"k2": K2}, "k2").decode([encrypted])


async def test_payloads_written_before_encryption_pass_through() -> None:
    codec = AesGcmCodec({"k1": K1}, "k1")
    (encrypted,) = await codec.encode([CONTACT])

    assert await codec.decode([CONTACT, encrypted]) == [CONTACT, CONTACT]


def test_key_setting_lists_the_current_key_first() -> None:
    spec = f"k2:{base64.b64encode(K2).decode()}, k1:{base64.b64encode(K1).decode()}"

    keys, current = load_keys(spec)

    assert current == "k2"
    assert keys == {"k2": K2, "k1": K1}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("k1", "expected <key id>:<base64 key>"),
        ("k1:not base64!", "not valid base64"),
        (f"k1:{base64.b64encode(os.urandom(16)).decode()}", "16 bytes, AES-256 needs 32"),
        ("k1:{key},k1:{key}", "appears twice"),
        ("bad id:{key}", "use 1 to 64 letters"),
        ("k1:{key},", "key 2: expected"),
    ],
)
def test_malformed_key_setting_is_refused_without_echoing_the_key(spec: str, message: str) -> None:
    key = new_key()

    with pytest.raises(KeySpecError, match=message) as raised:
        load_keys(spec.format(key=key))

    assert key not in str(raised.value)


def test_current_key_must_be_one_of_the_keys() -> None:
    with pytest.raises(KeySpecError, match="current key id 'k2'"):
        AesGcmCodec({"k1": K1}, "k2")


async def test_codec_from_settings_is_off_when_unset_and_reads_a_secret() -> None:
    assert codec_from_settings(None) is None
    assert codec_from_settings(SecretStr("  ")) is None

    codec = codec_from_settings(SecretStr(f"k9:{new_key()}"))

    assert codec is not None and codec.current_key_id == "k9"
    assert await codec.decode(await codec.encode([CONTACT])) == [CONTACT]


async def test_failure_messages_are_encrypted_by_the_encrypting_converter() -> None:
    converter = with_encryption(pydantic_data_converter, AesGcmCodec({"k1": K1}, "k1"))
    failure = Failure()

    await converter.encode_failure(ApplicationError(f"mailbox {EMAIL} refused the notice"), failure)

    assert EMAIL.encode() not in failure.SerializeToString()
    restored = await converter.decode_failure(failure)
    assert str(restored) == f"mailbox {EMAIL} refused the notice"


def test_without_a_codec_the_converter_is_unchanged() -> None:
    assert with_encryption(pydantic_data_converter, None) is pydantic_data_converter
