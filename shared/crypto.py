"""Secrets at rest: AES-256-GCM with a key id, so keys can be rotated; API keys stored as hashes.

Ciphertext layout (bytes): `kid_len(1) | kid | nonce(12) | ciphertext+tag`. The associated data binds a
ciphertext to the row it belongs to, so a blob copied to another row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class KeyRingError(ValueError):
    """The configured encryption keys are malformed (never includes key material)."""


class DecryptError(Exception):
    """A ciphertext could not be decrypted: unknown key id, tampered, or bound to another row."""


@dataclass(frozen=True)
class KeyRing:
    primary_kid: str
    keys: dict[str, bytes]

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        keys: dict[str, bytes] = {}
        primary = ""
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            kid, sep, encoded = part.partition(":")
            if not sep or not kid or len(kid) > 64:
                raise KeyRingError("each encryption key must look like 'kid:base64key'")
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError as exc:
                raise KeyRingError(f"encryption key {kid!r} is not valid base64") from exc
            if len(key) != 32:
                raise KeyRingError(f"encryption key {kid!r} must be 32 bytes (AES-256), got {len(key)}")
            if kid in keys:
                # A second key under the same id would silently replace the first, and every row sealed with
                # the first would stop decrypting.
                raise KeyRingError(f"encryption key id {kid!r} appears twice; every key needs its own id")
            keys[kid] = key
            primary = primary or kid
        if not keys:
            raise KeyRingError("no encryption key configured")
        return cls(primary_kid=primary, keys=keys)

    def encrypt(self, plaintext: bytes, *, associated_data: bytes) -> bytes:
        kid = self.primary_kid.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.primary_kid]).encrypt(nonce, plaintext, associated_data)
        return bytes([len(kid)]) + kid + nonce + sealed

    def decrypt(self, blob: bytes, *, associated_data: bytes) -> bytes:
        if not blob:
            raise DecryptError("empty ciphertext")
        kid_len = blob[0]
        kid = blob[1 : 1 + kid_len].decode(errors="replace")
        key = self.keys.get(kid)
        if key is None:
            raise DecryptError(f"no key with id {kid!r} is configured")
        nonce = blob[1 + kid_len : 1 + kid_len + NONCE_BYTES]
        try:
            return AESGCM(key).decrypt(nonce, blob[1 + kid_len + NONCE_BYTES :], associated_data)
        except Exception as exc:  # cryptography raises InvalidTag; never echo the data
            raise DecryptError("ciphertext failed authentication") from exc

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        return blob[1 : 1 + blob[0]].decode(errors="replace")


def generate_key_spec(kid: str = "k1") -> str:
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


API_KEY_PREFIX = "hk_"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(raw_key: str) -> str:
    """API keys are 256-bit random tokens, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)
