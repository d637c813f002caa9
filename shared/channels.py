"""Gateway channels: the PushGo-compatible credential (channel id + password) and its verification.

A channel password is stored only as a slow salted scrypt hash (`hash_password`). Verifying one costs tens of
milliseconds of CPU by design, so a steady stream of gateway calls would make ingest CPU-bound; the API keeps
a per-process `VerificationCache`:
- channel rows (id -> project, hash, version) are cached for `row_ttl_s` (2 s), so a rotate or delete made by
  another API process is seen within that time;
- a verification outcome is cached under (channel id, sha256 of the stored hash and the presented password,
  row version), so a rotated password (new hash, new version) never matches an old entry.
Nothing here touches the database: the API passes a loader for the row.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

#: a client-given channel id (seed 002's `06J0FZG1Y8XGG14VTQ4Y3G10MR`); generated ids are 32 lowercase hex
CHANNEL_ID_RE = re.compile(r"^[A-Za-z0-9_:\-]{1,64}$")
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 128

# scrypt cost: N=2^14, r=8 (16 MiB, ~50 ms here): slow for a guesser, cheap enough behind the cache.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_DKLEN = 32
_SCHEME = "scrypt"


def new_channel_id() -> str:
    return secrets.token_hex(16)


def new_password() -> str:
    # 32 URL-safe characters: well inside 8-128, pasteable into a shell step without quoting.
    return secrets.token_urlsafe(24)


def valid_password(password: str) -> bool:
    return PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=_SCRYPT_DKLEN, maxmem=128 * r * n * p + 2**20
    )


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash` (base64): the parameters travel with the hash so they can be raised later."""
    salt = secrets.token_bytes(16)
    digest = _derive(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    b64 = base64.b64encode
    return f"{_SCHEME}${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = _derive(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Verified against when the channel does not exist, so an unknown channel costs as much as a wrong password
# (no enumeration by timing).
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class ChannelRow:
    channel_id: str
    project: str
    password_hash: str
    version: int


RowLoader = Callable[[str], Awaitable[ChannelRow | None]]
Verifier = Callable[[str, str], Awaitable[bool]]


class VerificationCache:
    """Per-process cache of channel rows and password verifications (see the module docstring)."""

    MAX_ENTRIES = 10_000

    def __init__(self, row_ttl_s: float = 2.0, verify_ttl_s: float = 300.0) -> None:
        self.row_ttl_s = row_ttl_s
        self.verify_ttl_s = verify_ttl_s
        self._rows: dict[str, tuple[float, ChannelRow | None]] = {}
        self._verified: dict[tuple[str, bytes, int], tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def forget(self, channel_id: str) -> None:
        """Drop a rotated or deleted channel at once in this process (others notice within `row_ttl_s`)."""
        with self._lock:
            self._rows.pop(channel_id, None)

    async def authenticate(
        self, channel_id: str, password: str, load: RowLoader, verify: Verifier
    ) -> ChannelRow | None:
        """The channel when `password` is its password, else None (unknown channel and wrong password alike)."""
        now = time.monotonic()
        with self._lock:
            hit = self._rows.get(channel_id)
        if hit is not None and hit[0] > now:
            row = hit[1]
        else:
            row = await load(channel_id)
            self._put(self._rows, channel_id, (now + self.row_ttl_s, row))
        if row is None:
            # Same work as a wrong password (no enumeration by timing), done once per (channel, guess) while
            # the "no such channel" row is cached, so a script retrying a typo does not burn a core.
            miss = (channel_id, hashlib.sha256(password.encode()).digest(), -1)
            with self._lock:
                seen = self._verified.get(miss)
            if seen is None or seen[0] <= now:
                await verify(password, _DUMMY_HASH)
                self._put(self._verified, miss, (now + self.row_ttl_s, False))
            return None
        digest = hashlib.sha256(row.password_hash.encode() + b"\0" + password.encode()).digest()
        key = (row.channel_id, digest, row.version)
        with self._lock:
            verdict = self._verified.get(key)
        if verdict is not None and verdict[0] > now:
            ok = verdict[1]
        else:
            ok = await verify(password, row.password_hash)
            self._put(self._verified, key, (now + self.verify_ttl_s, ok))
        return row if ok else None

    def _put(self, table: dict, key: object, value: object) -> None:  # type: ignore[type-arg]
        with self._lock:
            if len(table) >= self.MAX_ENTRIES:
                table.clear()
            table[key] = value
