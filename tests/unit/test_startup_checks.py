"""Start-up refusals (shared/config.py, shared/crypto.py): what a production deployment must not run with."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import DEV_ADMIN_KEY, DEV_ENCRYPTION_KEYS, Settings
from shared.crypto import KeyRingError, generate_key_spec

ROOT = Path(__file__).resolve().parents[2]


def test_duplicate_key_ids_are_refused():
    """Repro (issue 10): `HERALD_ENCRYPTION_KEYS=k1:A,k1:B` was accepted; the second key silently replaced the
    first, so every row sealed with the first stopped decrypting."""
    spec = f"{generate_key_spec('k1')},{generate_key_spec('k1')}"
    with pytest.raises(KeyRingError, match="'k1' appears twice"):
        Settings(encryption_keys=spec).check_production()


def test_production_refuses_the_development_admin_key():
    """Repro (issue 10): HERALD_ENV=production started with the public `hk_local_dev_admin_key`."""
    with pytest.raises(RuntimeError, match="HERALD_BOOTSTRAP_ADMIN_KEY"):
        Settings(
            env="production", encryption_keys=generate_key_spec(), bootstrap_admin_key=DEV_ADMIN_KEY
        ).check_production()
    with pytest.raises(RuntimeError, match="HERALD_ENCRYPTION_KEYS"):
        Settings(env="production", encryption_keys=DEV_ENCRYPTION_KEYS).check_production()
    # a generated key in production, and the development key in development, are fine
    Settings(env="production", encryption_keys=generate_key_spec(), bootstrap_admin_key="hk_" + "x" * 40)
    Settings(bootstrap_admin_key=DEV_ADMIN_KEY).check_production()


def test_compose_does_not_bootstrap_a_public_admin_key():
    """Repro (issue 10): deploy/docker-compose.yml defaulted HERALD_BOOTSTRAP_ADMIN_KEY to the public
    development key, so `docker compose up` exposed an admin API anyone could use."""
    text = (ROOT / "deploy" / "docker-compose.yml").read_text()
    assert DEV_ADMIN_KEY not in text
    assert "${HERALD_BOOTSTRAP_ADMIN_KEY:?" in text  # compose refuses to start without one
