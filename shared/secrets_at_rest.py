"""Integration configs encrypted at rest, bound to their row by associated data, and the one path that turns a
stored config back into a validated provider config (`load_integration_config`, for the API and the workers)."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from shared.crypto import DecryptError, KeyRing


def _aad(integration_id: uuid.UUID) -> bytes:
    return b"herald:integration:" + integration_id.bytes


def encrypt_config(keyring: KeyRing, integration_id: uuid.UUID, config: dict[str, Any]) -> bytes:
    return keyring.encrypt(orjson.dumps(config), associated_data=_aad(integration_id))


def decrypt_config(keyring: KeyRing, integration_id: uuid.UUID, blob: bytes) -> dict[str, Any]:
    value = orjson.loads(keyring.decrypt(blob, associated_data=_aad(integration_id)))
    if not isinstance(value, dict):
        raise ValueError("integration config is not an object")
    return value


class IntegrationConfigError(Exception):
    """A stored integration config that cannot be used: it does not decrypt, is not JSON, or fails its schema.

    The message says why in words safe to store and show (never a value from the config)."""


ModelT = TypeVar("ModelT", bound=BaseModel)


def load_integration_config(
    keyring: KeyRing, integration_id: uuid.UUID, blob: bytes, model: type[ModelT]
) -> ModelT:
    """Decrypt and validate one integration's config: the one path used by the API and the workers.

    `model` is the provider's config schema (providers.registry.config_model; shared may not import it)."""
    try:
        raw = decrypt_config(keyring, integration_id, blob)
    except DecryptError as exc:
        raise IntegrationConfigError(f"config cannot be decrypted: {exc}") from None
    except ValueError:  # orjson.JSONDecodeError is a ValueError; so is a non-object
        raise IntegrationConfigError("config is not a JSON object") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        # Field locations only: a validation message may quote the (secret) input.
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        raise IntegrationConfigError(
            f"stored config is invalid: {exc.error_count()} error(s) in {', '.join(fields)[:200]}"
        ) from None
