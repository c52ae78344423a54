"""Payload encryption: what the worker and the CLI send to Temporal is AES-256-GCM ciphertext.

Every payload (inputs, results, memos, signals, updates, queries, heartbeats, and failure messages
through the encoded-attributes failure converter) passes the codec on its way to the server, so a
history, the Web UI and the server's database hold ciphertext only; the codec server
(`client.codec_server`) lets a person with the keys read them again.

Keys are a keyring: `id:key` entries, newest first. The newest encrypts; any listed key decrypts,
so a key is rotated by putting a new one in front and dropping the old one once no history needs
it. A payload not encrypted by us (an older history, another client) passes through unchanged.

A payload under a key we do not hold: the CLI stops with KeyringError (one line, naming
PAYLOAD_KEYS). The worker's codec lets it through still sealed, and the payload converter then
raises PayloadKeyMissing, a non-retryable ApplicationError, where the workflow converts it: the SDK
fails a start whose input it is (the run fails once, naming the key), rejects an update and drops
a signal (the workflow's task stays healthy), instead of failing the workflow task for ever
(which is what an exception in the codec does: it runs over the whole activation).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    EncodingPayloadConverter,
    PayloadCodec,
)
from temporalio.exceptions import ApplicationError

ENCODING = b"binary/encrypted"
KEY_ID_META = "encryption-key-id"
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12


class KeyringError(ValueError):
    """PAYLOAD_KEYS (or the keys file) cannot be used; the message names the entry."""


MISSING_KEY = "PayloadKeyMissing"  # the ApplicationError type of a payload no key opens


def key_id_of(payload: Payload) -> str | None:
    """The id of the key a payload is encrypted with; None if it is not ours."""
    if payload.metadata.get("encoding") != ENCODING:
        return None
    return payload.metadata.get(KEY_ID_META, b"").decode(errors="replace")


@dataclasses.dataclass(frozen=True)
class Keyring:
    """Named AES-256 keys; the first one encrypts."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """`id:base64key` entries separated by commas or newlines, newest first."""
        entries = [e.strip() for e in re.split(r"[,\n]", text) if e.strip()]
        if not entries:
            raise KeyringError("holds no key")
        keys: list[tuple[str, bytes]] = []
        for n, entry in enumerate(entries, 1):
            key_id, sep, encoded = entry.partition(":")
            if not sep or not KEY_ID_PATTERN.fullmatch(key_id):
                raise KeyringError(f"entry {n} is not `id:key` (id: letters, digits, . _ -)")
            try:
                padded = encoded.strip() + "=" * (-len(encoded.strip()) % 4)
                key = base64.b64decode(padded, altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(f"key {key_id!r} is not base64") from None
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r} is {len(key)} bytes, not {KEY_BYTES}")
            if any(key_id == known for known, _ in keys):
                raise KeyringError(f"key id {key_id!r} is listed twice")
            keys.append((key_id, key))
        return cls(tuple(keys))

    @staticmethod
    def new_entry() -> str:
        """A fresh `id:key` entry; the id is unique enough to tell keys apart in metadata."""
        key = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()
        return f"k{secrets.token_hex(4)}:{key}"

    @property
    def current(self) -> str:
        return self.keys[0][0]

    def _key(self, key_id: str) -> bytes:
        for known, key in self.keys:
            if known == key_id:
                return key
        raise KeyringError(
            f"a payload is encrypted with key {key_id!r}, which PAYLOAD_KEYS does not hold"
        )

    def encrypt(self, payload: Payload) -> Payload:
        key_id, key = self.keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_META: key_id.encode()},
            data=nonce + sealed,
        )

    def holds(self, key_id: str) -> bool:
        return any(known == key_id for known, _ in self.keys)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # not ours: plain payloads of older histories still read
        key_id = payload.metadata.get(KEY_ID_META, b"").decode(errors="replace")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = AESGCM(self._key(key_id)).decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise KeyringError(f"a payload under key {key_id!r} fails authentication") from None
        return Payload.FromString(plain)


class EncryptionCodec(PayloadCodec):
    """The keyring as the SDK's codec; `encrypt=False` only decrypts (encryption switched off).
    `strict=False` (the worker's): a payload no key opens is passed on still sealed, for the
    payload converter to refuse (SealedPayloadConverter)."""

    def __init__(self, keyring: Keyring, *, encrypt: bool = True, strict: bool = True) -> None:
        self.keyring = keyring
        self.encrypt = encrypt
        self.strict = strict

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not self.encrypt:
            return list(payloads)
        return [self.keyring.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(p) for p in payloads]

    def _decrypt(self, payload: Payload) -> Payload:
        try:
            return self.keyring.decrypt(payload)
        except KeyringError:
            if self.strict:
                raise
            return payload


class SealedPayloadConverter(EncodingPayloadConverter):
    """A payload the codec could not open (the worker's codec passes it on): converting it is
    a non-retryable error naming the key, which fails a start and rejects an update."""

    @property
    def encoding(self) -> str:
        return ENCODING.decode()

    def to_payload(self, value: object) -> Payload | None:
        return None  # never chosen to encode: sealing is the codec's

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> object:
        raise ApplicationError(
            f"a payload is encrypted with key {key_id_of(payload)!r}, which PAYLOAD_KEYS (or "
            "DATA_DIR/payload.keys) here does not hold: whoever sent it uses other keys",
            type=MISSING_KEY,
            non_retryable=True,
        )


class PayloadConverter(PydanticPayloadConverter):
    """Pydantic's converters, and one that refuses payloads still sealed."""

    def __init__(self) -> None:
        super().__init__()
        self._set_converters(*self.converters.values(), SealedPayloadConverter())


def data_converter(
    keyring: Keyring | None, *, encrypt: bool = True, strict: bool = True
) -> DataConverter:
    """Pydantic payloads, encrypted with the keyring; failure messages and stack traces are moved
    into an encoded payload too, so an error that quotes an input is not readable either.
    `strict=False`: the worker's (a payload no key opens is refused where it is converted)."""
    if keyring is None:
        return dataclasses.replace(
            pydantic_data_converter, payload_converter_class=PayloadConverter
        )
    return dataclasses.replace(
        pydantic_data_converter,
        payload_converter_class=PayloadConverter,
        payload_codec=EncryptionCodec(keyring, encrypt=encrypt, strict=strict),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def for_worker(converter: DataConverter) -> DataConverter:
    """The same converter with a lenient codec: what the worker decodes with."""
    codec = converter.payload_codec
    if not isinstance(codec, EncryptionCodec) or not codec.strict:
        return converter
    lenient = EncryptionCodec(codec.keyring, encrypt=codec.encrypt, strict=False)
    return dataclasses.replace(converter, payload_codec=lenient)
