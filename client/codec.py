"""Payload encryption: what the worker and the CLI send to Temporal is AES-256-GCM ciphertext.

Every payload (inputs, results, memos, signals, updates, queries, heartbeats, and failure messages
through the encoded-attributes failure converter) passes the codec on its way to the server, so a
history, the Web UI and the server's database hold ciphertext only; the codec server
(`client.codec_server`) lets a person with the keys read them again.

Keys are a keyring: `id:key` entries, newest first. The newest encrypts; any listed key decrypts,
so a key is rotated by putting a new one in front and dropping the old one once no history needs
it. A payload not encrypted by us (an older history, another client) passes through unchanged.
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
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCODING = b"binary/encrypted"
KEY_ID_META = "encryption-key-id"
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12


class KeyringError(ValueError):
    """PAYLOAD_KEYS (or the keys file) cannot be used; the message names the entry."""


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
    """The keyring as the SDK's codec; `encrypt=False` only decrypts (encryption switched off)."""

    def __init__(self, keyring: Keyring, *, encrypt: bool = True) -> None:
        self.keyring = keyring
        self.encrypt = encrypt

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not self.encrypt:
            return list(payloads)
        return [self.keyring.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.keyring.decrypt(p) for p in payloads]


def data_converter(keyring: Keyring | None, *, encrypt: bool = True) -> DataConverter:
    """Pydantic payloads, encrypted with the keyring; failure messages and stack traces are moved
    into an encoded payload too, so an error that quotes an input is not readable either."""
    if keyring is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring, encrypt=encrypt),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
