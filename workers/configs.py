"""Provider configs of integrations, decrypted and validated once per process and cached by their ciphertext.

The decrypt-and-validate path itself is shared with the API (shared.secrets_at_rest.load_integration_config);
this module only adds the cache and turns a failure into a reason (never containing a secret).
"""

from __future__ import annotations

import hashlib
import threading
import uuid

from pydantic import BaseModel

from providers import registry
from shared.crypto import KeyRing
from shared.db.models import Integration
from shared.secrets_at_rest import IntegrationConfigError, load_integration_config

CONFIG_CACHE_ENTRIES = 2048
_config_cache: dict[tuple[uuid.UUID, str, bytes], BaseModel | str] = {}
_config_lock = threading.Lock()


def load_config(keyring: KeyRing, integration: Integration) -> BaseModel | str:
    """The validated provider config, or why it cannot be used.

    Cached per process by the ciphertext itself, so any change to the stored config is a new entry."""
    key = (integration.id, integration.provider, hashlib.sha256(integration.config_ciphertext).digest())
    with _config_lock:
        cached = _config_cache.get(key)
    if cached is None:
        cached = _decrypt_and_validate(keyring, integration)
        with _config_lock:
            if len(_config_cache) >= CONFIG_CACHE_ENTRIES:
                _config_cache.pop(next(iter(_config_cache)))
            _config_cache[key] = cached
    return cached


def _decrypt_and_validate(keyring: KeyRing, integration: Integration) -> BaseModel | str:
    try:
        model = registry.config_model(integration.provider)
    except registry.UnknownProvider:
        return f"unknown provider {integration.provider!r}"
    try:
        return load_integration_config(keyring, integration.id, integration.config_ciphertext, model)
    except IntegrationConfigError as exc:
        return str(exc)
