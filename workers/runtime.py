"""What each worker process owns: one asyncio event loop (on its own thread), one HTTP client, one engine.

Celery runs tasks on a pool of threads (`-P threads`): every `deliver` and `fanout` task hands its claimed sends
to the one event loop and returns (workers/dispatch.py records each outcome as it ends), so a process keeps up to
`inflight_sends_per_process` sends in flight while the loop, its keep-alive connections and each provider's
cached credentials are shared. Built lazily in the process that
uses it and never inherited across fork (sockets shared between processes corrupt each other).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
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
logger = logging.getLogger(__name__)
#: how long one provider may take to close its connections on shutdown
CLOSE_TIMEOUT_S = 5.0


@dataclass
class ProcessRuntime:
    pid: int
    settings: Settings
    loop: asyncio.AbstractEventLoop
    loop_thread: threading.Thread
    sessions: sessionmaker[Session]
    keyring: KeyRing
    _http: HttpClient | None = None
    _providers: dict[str, Provider[BaseModel]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the process's loop from any task thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def ensure_http(self) -> HttpClient:
        with self._lock:
            if self._http is None:
                self._http = self.run(self._make_http())
            return self._http

    @property
    def http(self) -> HttpClient:
        return self.ensure_http()

    async def _make_http(self) -> HttpClient:
        return HttpClient.create(
            allow_cidrs=self.settings.egress_allow_cidrs,
            max_connections=self.settings.http_max_connections,
        )

    def provider(self, name: str) -> Provider[BaseModel]:
        with self._lock:
            instance = self._providers.get(name)
        if instance is None:
            created = registry.provider_class(name)(self.ensure_http())
            with self._lock:
                instance = self._providers.setdefault(name, created)
        return instance

    def close(self) -> None:
        if self.loop.is_running():
            with self._lock:
                providers, self._providers = list(self._providers.values()), {}
            # Providers first (SMTP connections, APNs' HTTP/2 client), then the HTTP client they share.
            self.run(_close_all(providers))
            if self._http is not None:
                self.run(self._http.close())
                self._http = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop_thread.join(timeout=5)


async def _close_all(providers: list[Provider[BaseModel]]) -> None:
    """Each provider's aclose, bounded: a hung close must not keep a worker from exiting."""
    for provider in providers:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await provider.aclose()
        except Exception:
            logger.warning("closing provider %s failed", provider.name, exc_info=True)


_runtime: ProcessRuntime | None = None
_runtime_lock = threading.Lock()

# Threads beside Celery's pool that hold a session: the send loop's writers and claimers (workers/dispatch.py
# RECORD_THREADS, CLAIM_THREADS),
# and a margin for the sweeper's and the health checks'.
THREADS_BESIDE_POOL = 8


def worker_pool_size(settings: Settings) -> int:
    """Connections a worker process keeps open: one per thread that may hold a session at once. Fewer, and
    every session beyond the pool opens and closes a connection (a new PostgreSQL backend, its caches cold):
    under load that churn cost more CPU in the worker and in PostgreSQL than the statements themselves."""
    return max(settings.database_pool_size, settings.worker_concurrency + THREADS_BESIDE_POOL)


def get_runtime() -> ProcessRuntime:
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.pid != os.getpid():
            if _runtime is not None:
                # Inherited from the parent across fork: drop it without touching its sockets.
                dispose_engines()
            settings = get_settings()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="herald-send-loop", daemon=True)
            thread.start()
            _runtime = ProcessRuntime(
                pid=os.getpid(),
                settings=settings,
                loop=loop,
                loop_thread=thread,
                sessions=session_factory(settings, worker_pool_size(settings)),
                keyring=KeyRing.parse(settings.encryption_keys.get_secret_value()),
            )
        return _runtime


def shutdown_runtime() -> None:
    global _runtime
    with _runtime_lock:
        if _runtime is not None and _runtime.pid == os.getpid():
            _runtime.close()
        _runtime = None
