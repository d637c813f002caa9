"""Google OAuth 2 for FCM: the service-account JWT grant (RS256), access tokens cached until shortly before expiry.

The assertion carries iss = client_email, scope = firebase.messaging, aud = token_uri, iat, exp = iat + 1 h
(reference/provider-protocols.md section 5). One token per service account and worker process; concurrent sends
that find none wait on one fetch instead of each minting their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from providers._http import HttpClient, classify_status, excerpt
from shared.errors import AuthFailed, ProviderUnavailable

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_S = 3600
# Refresh this long before the token's stated expiry, so a send never carries a token that dies in flight.
REFRESH_MARGIN_S = 120.0


def load_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("private_key is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("private_key must be the service account's RSA key")
    return key


@dataclass(frozen=True)
class Account:
    client_email: str
    private_key_pem: str
    private_key_id: str | None
    token_uri: str

    @property
    def cache_key(self) -> str:
        raw = f"{self.client_email}\0{self.token_uri}\0{self.private_key_pem}"
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class _Token:
    value: str
    expires_at_s: float


class AccessTokens:
    def __init__(self, http: HttpClient, provider: str) -> None:
        self._http = http
        self._provider = provider
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def assertion(self, account: Account, *, now_s: float | None = None) -> str:
        now = int(time.time() if now_s is None else now_s)
        claims = {
            "iss": account.client_email,
            "scope": SCOPE,
            "aud": account.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_S,
        }
        headers = {"kid": account.private_key_id} if account.private_key_id else None
        return jwt.encode(claims, load_key(account.private_key_pem), algorithm="RS256", headers=headers)

    async def get(self, account: Account, *, timeout_s: float, deadline: float | None = None) -> str:
        key = account.cache_key
        token = self._tokens.get(key)
        if token is not None and token.expires_at_s - REFRESH_MARGIN_S > time.time():
            return token.value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self._tokens.get(key)  # fetched by whoever held the lock before us
            if token is not None and token.expires_at_s - REFRESH_MARGIN_S > time.time():
                return token.value
            token = self._tokens[key] = await self._fetch(account, timeout_s, deadline)
            return token.value

    def invalidate(self, account: Account, value: str) -> None:
        """Forget `value` (the API answered 401) unless a newer token already replaced it."""
        token = self._tokens.get(account.cache_key)
        if token is not None and token.value == value:
            del self._tokens[account.cache_key]

    async def _fetch(self, account: Account, timeout_s: float, deadline: float | None) -> _Token:
        assertion = self.assertion(account)
        response = await self._http.request(
            "POST",
            account.token_uri,
            provider=self._provider,
            body=urlencode({"grant_type": GRANT_TYPE, "assertion": assertion}).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
            timeout_s=timeout_s,
            deadline=deadline,
        )
        secrets = [account.private_key_pem, assertion]
        if response.status in (400, 401, 403):
            # invalid_grant / invalid_client: a wrong or deleted key, or a clock far off: nothing a retry fixes
            raise AuthFailed(
                self._provider,
                f"token endpoint refused the service account ({_oauth_error(response.body)})",
                status_code=response.status,
                response_excerpt=excerpt(response.body, secrets),
            )
        classify_status(self._provider, response, secrets=secrets, detail="token endpoint")
        try:
            data: Any = orjson.loads(response.body)
            value = data["access_token"]
            expires_in_s = float(data.get("expires_in", 3600))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ProviderUnavailable(
                self._provider, "token endpoint answered without an access token"
            ) from None
        if not isinstance(value, str) or not value:
            raise ProviderUnavailable(self._provider, "token endpoint answered without an access token")
        return _Token(value, time.time() + expires_in_s)


def _oauth_error(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "no error code"
    code = data.get("error") if isinstance(data, dict) else None
    return (
        code
        if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) < 50
        else "no error code"
    )
