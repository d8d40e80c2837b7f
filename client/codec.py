"""Payload encryption: an AES-256-GCM payload codec with key rotation by key id.

Every payload the service hands to Temporal (workflow input, activity arguments and results,
update and query answers, summaries and details, failure messages) is stored as
``binary/encrypted`` ciphertext, so customer names, addresses and amounts never reach Temporal's
database in clear. Search attributes are not payloads the codec sees: the server must index them.

Keys come from one setting, e.g. ``DUNNING_CODEC_KEYS="k2:<base64 32 bytes>,k1:<base64>"``; the
first key encrypts, every listed key decrypts. Rotation: prepend a new key and keep the old ones
for as long as histories encrypted with them are retained.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

ENCODING = b"binary/encrypted"
"""The ``encoding`` metadata of an encrypted payload."""
KEY_ID_METADATA = "encryption-key-id"
"""The metadata entry naming the key a payload was encrypted with."""
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class KeySpecError(ValueError):
    """The key setting is malformed; the message never contains key material."""


class UnknownKeyError(LookupError):
    """A payload names a key id that is not configured (removed too early, or another service's data)."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload failed authentication: tampered with, truncated, or a different key under that id."""


class CodecKeys(NamedTuple):
    """The keys by id and the id of the one that encrypts."""

    keys: dict[str, bytes]
    current_key_id: str


class AesGcmCodec(PayloadCodec):
    """Encrypts each whole ``Payload`` (metadata and data) with AES-256-GCM under the current key.

    The ciphertext is ``nonce (12 random bytes) || ciphertext || tag``; the key id is the associated
    data, so a payload relabelled with another key id fails authentication. Decoding passes payloads
    without the ``binary/encrypted`` encoding through unchanged (histories written before encryption).
    """

    def __init__(self, keys: Mapping[str, bytes], current_key_id: str) -> None:
        for key_id, key in keys.items():
            _check_key(key_id, key)
        if current_key_id not in keys:
            raise KeySpecError(f"the current key id {current_key_id!r} is not among the keys {sorted(keys)}")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current_key_id = current_key_id

    @property
    def key_ids(self) -> list[str]:
        """Ids of every key that can decrypt."""
        return sorted(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt every payload with the current key."""
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt the encrypted payloads with the key each names; pass the others through."""
        return [self.decrypt(payload) if is_encrypted(payload) else payload for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        """One payload, encrypted with the current key."""
        key_id = self.current_key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        """One encrypted payload, decrypted with the key it names."""
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(self.key_ids)
            raise UnknownKeyError(f"payload encrypted with key id {key_id!r}, which is not configured (known: {known})")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            clear = cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r} failed authentication (tampered with or a different key)"
            ) from None
        return Payload.FromString(clear)


def is_encrypted(payload: Payload) -> bool:
    """Whether the payload carries this codec's encoding."""
    return payload.metadata.get("encoding") == ENCODING


def load_keys(spec: str) -> CodecKeys:
    """Parse ``"k2:<base64>,k1:<base64>"`` (32-byte keys, standard base64); the first key is current."""
    keys: dict[str, bytes] = {}
    for position, entry in enumerate((part.strip() for part in spec.split(",")), start=1):
        key_id, colon, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not colon:
            raise KeySpecError(f"key {position}: expected <key id>:<base64 key>")
        if key_id in keys:
            raise KeySpecError(f"key id {key_id!r} appears twice")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise KeySpecError(f"key {key_id!r}: not valid base64") from None
        _check_key(key_id, key)
        keys[key_id] = key
    return CodecKeys(keys=keys, current_key_id=next(iter(keys)))


def codec_from_settings(codec_keys: SecretStr | str | None) -> AesGcmCodec | None:
    """The codec for the ``DUNNING_CODEC_KEYS`` setting, or None (no encryption) if it is unset or blank."""
    spec = codec_keys.get_secret_value() if isinstance(codec_keys, SecretStr) else codec_keys
    if not spec or not spec.strip():
        return None
    keys, current_key_id = load_keys(spec)
    return AesGcmCodec(keys, current_key_id)


def with_encryption(converter: DataConverter, codec: PayloadCodec | None) -> DataConverter:
    """``converter`` with ``codec`` applied, and failure messages and stack traces moved into encoded
    (so encrypted) attributes: an error text can quote an address or an amount. None: unchanged."""
    if codec is None:
        return converter
    return dataclasses.replace(
        converter, payload_codec=codec, failure_converter_class=DefaultFailureConverterWithEncodedAttributes
    )


def new_key() -> str:
    """A fresh random 256-bit key, base64-encoded for ``DUNNING_CODEC_KEYS``."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def _check_key(key_id: str, key: bytes) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise KeySpecError(f"key id {key_id!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    if len(key) != KEY_BYTES:
        raise KeySpecError(f"key {key_id!r}: {len(key)} bytes, AES-256 needs {KEY_BYTES}")
