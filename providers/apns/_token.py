"""APNs provider tokens: ES256 JWTs signed with the team's .p8 key, reused for 40 minutes.

Apple rejects a token older than an hour (403 ExpiredProviderToken) and answers 429
TooManyProviderTokenUpdates to a client that mints more often than every 20 minutes, so one token per
(team, key) is cached for the worker process and replaced at 40 minutes, or at once when APNs says it expired.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

TOKEN_REUSE_S = 40 * 60


def load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The .p8 key as a P-256 private key; ValueError (without the key's content) if it is not one."""
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("private_key is not a PEM (.p8) private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("private_key must be an ES256 (P-256) key, as Apple's .p8 files are")
    return key


@dataclass
class _Minted:
    token: str
    issued_at_s: float


class TokenCache:
    def __init__(self) -> None:
        self._tokens: dict[str, _Minted] = {}

    @staticmethod
    def _key(team_id: str, key_id: str, pem: str) -> str:
        return hashlib.sha256(f"{team_id}\0{key_id}\0{pem}".encode()).hexdigest()

    def token(self, team_id: str, key_id: str, pem: str, *, now_s: float | None = None) -> str:
        now_s = time.time() if now_s is None else now_s
        cache_key = self._key(team_id, key_id, pem)
        minted = self._tokens.get(cache_key)
        if minted is None or now_s - minted.issued_at_s >= TOKEN_REUSE_S:
            encoded = jwt.encode(
                {"iss": team_id, "iat": int(now_s)},
                load_key(pem),
                algorithm="ES256",
                headers={"kid": key_id},
            )
            minted = self._tokens[cache_key] = _Minted(encoded, now_s)
        return minted.token

    def expire(self, team_id: str, key_id: str, pem: str, token: str) -> None:
        """Forget `token` (APNs said ExpiredProviderToken) unless a newer one already replaced it."""
        cache_key = self._key(team_id, key_id, pem)
        minted = self._tokens.get(cache_key)
        if minted is not None and minted.token == token:
            del self._tokens[cache_key]
