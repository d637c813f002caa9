"""`herald keys rotate-encryption`: re-encrypt integration configs with the primary key of
HERALD_ENCRYPTION_KEYS. Talks to the database directly (it is what you run while rotating keys).

Rotation: put the new key first (`new:...,old:...`) everywhere, run this, then drop the old key. Rows are taken
in batches with FOR UPDATE SKIP LOCKED, so it can run beside live workers; a row that no configured key can
decrypt is reported and left as it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select

from shared.config import Settings
from shared.crypto import DecryptError, KeyRing
from shared.db.models import Integration
from shared.db.session import session_factory
from shared.secrets_at_rest import decrypt_config, encrypt_config


@dataclass
class RotationResult:
    primary_kid: str
    rotated: int = 0
    unreadable: list[uuid.UUID] = field(default_factory=list)


def rotate_encryption(settings: Settings, batch_size: int = 100) -> RotationResult:
    keyring = KeyRing.parse(settings.encryption_keys.get_secret_value())
    sessions = session_factory(settings)
    result = RotationResult(keyring.primary_kid)
    while True:
        with sessions() as session:
            stmt = (
                select(Integration)
                .where(Integration.config_key_id != keyring.primary_kid)
                .order_by(Integration.id)
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            )
            if result.unreadable:
                stmt = stmt.where(Integration.id.not_in(result.unreadable))
            rows = list(session.scalars(stmt))
            if not rows:
                return result
            for row in rows:
                try:
                    plain = decrypt_config(keyring, row.id, row.config_ciphertext)
                except (DecryptError, ValueError):
                    result.unreadable.append(row.id)
                    continue
                row.config_ciphertext = encrypt_config(keyring, row.id, plain)
                row.config_key_id = keyring.primary_kid
                result.rotated += 1
            session.commit()
