"""What each worker process owns: one asyncio event loop, one HTTP client, one database engine.

Built lazily in the process that uses it (never inherited across fork: sockets shared between processes corrupt
each other). A prefork child runs one task at a time on its main thread, so a task drives the loop with
`run_until_complete`; the loop and its keep-alive connections outlive the task.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from providers import registry
from providers._http import HttpClient
from providers.base import Provider
from shared.config import Settings, get_settings
from shared.crypto import KeyRing
from shared.db.session import dispose_engines, session_factory

T = TypeVar("T")


@dataclass
class ProcessRuntime:
    pid: int
    settings: Settings
    loop: asyncio.AbstractEventLoop
    sessions: sessionmaker[Session]
    keyring: KeyRing
    _http: HttpClient | None = None
    _providers: dict[str, Provider[BaseModel]] = field(default_factory=dict)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def ensure_http(self) -> HttpClient:
        """Create the process's HTTP client if needed; call while the loop is not running."""
        if self._http is None:
            self._http = self.run(self._make_http())
        return self._http

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            raise RuntimeError("ensure_http() must run before the event loop starts sending")
        return self._http

    async def _make_http(self) -> HttpClient:
        return HttpClient.create(
            allow_cidrs=self.settings.egress_allow_cidrs,
            max_connections=self.settings.http_max_connections,
        )

    def provider(self, name: str) -> Provider[BaseModel]:
        instance = self._providers.get(name)
        if instance is None:
            instance = self._providers[name] = registry.provider_class(name)(self.http)
        return instance

    def close(self) -> None:
        if self._http is not None and not self.loop.is_closed():
            self.run(self._http.close())
            self._http = None


_runtime: ProcessRuntime | None = None


def get_runtime() -> ProcessRuntime:
    global _runtime
    if _runtime is None or _runtime.pid != os.getpid():
        if _runtime is not None:
            # Inherited from the parent across fork: drop it without touching its sockets.
            dispose_engines()
        settings = get_settings()
        _runtime = ProcessRuntime(
            pid=os.getpid(),
            settings=settings,
            loop=asyncio.new_event_loop(),
            sessions=session_factory(settings),
            keyring=KeyRing.parse(settings.encryption_keys.get_secret_value()),
        )
    return _runtime


def shutdown_runtime() -> None:
    global _runtime
    if _runtime is not None and _runtime.pid == os.getpid():
        _runtime.close()
    _runtime = None
