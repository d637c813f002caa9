"""Integration configs encrypted at rest, bound to their row by associated data."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from shared.crypto import KeyRing


def _aad(integration_id: uuid.UUID) -> bytes:
    return b"herald:integration:" + integration_id.bytes


def encrypt_config(keyring: KeyRing, integration_id: uuid.UUID, config: dict[str, Any]) -> bytes:
    return keyring.encrypt(orjson.dumps(config), associated_data=_aad(integration_id))


def decrypt_config(keyring: KeyRing, integration_id: uuid.UUID, blob: bytes) -> dict[str, Any]:
    value = orjson.loads(keyring.decrypt(blob, associated_data=_aad(integration_id)))
    if not isinstance(value, dict):
        raise ValueError("integration config is not an object")
    return value
