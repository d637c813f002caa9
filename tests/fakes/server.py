"""A scripted HTTP server on 127.0.0.1 running in a background thread (aiohttp), the base of every fake.

Each path has a queue of scripted replies; when the queue is empty the fake's default reply is used. Every
request is recorded with its arrival time, headers and raw body.

`split_writes=N` (on the server, or per Reply) sends every reply body in N writes with `split_pause_s` between
them, flushed one by one, under a correct Content-Length: a client that keeps only its first read of the body
sees a truncated answer. The contract suite runs every vendor this way too (tests/fakes/catalog.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    content_type: str = "text/plain"
    #: send the body in this many writes (None: the server's `split_writes`)
    split_writes: int | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    arrived_at: float  # time.time()


class FakeServer:
    def __init__(
        self,
        default_reply: Callable[[Recorded], Reply] | None = None,
        *,
        split_writes: int = 1,
        split_pause_s: float = 0.05,
    ) -> None:
        self._default = default_reply or (lambda _req: Reply(200, b"ok"))
        self.split_writes = split_writes
        self.split_pause_s = split_pause_s
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._requests: dict[str, list[Recorded]] = defaultdict(list)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-server")
        self._runner: web.AppRunner | None = None
        self.port = 0

    # life cycle
    def start(self) -> FakeServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A fake holding a hanging reply open (a test of a send that never returns) must not hold up its
        # teardown for aiohttp's default 60 s of graceful shutdown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # scripting
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[path].extend(replies)

    def requests(self, path: str) -> list[Recorded]:
        with self._lock:
            return list(self._requests[path])

    def wait_for(self, path: str, count: int, timeout_s: float = 20.0) -> list[Recorded]:
        """Every request to `path` once there are at least `count`; fails the test if they do not arrive in
        `timeout_s` (a partial list returned quietly would let a caller assert less than it says)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._requests[path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{path}: {len(self._requests[path])} of {count} requests arrived within {timeout_s} s"
                    )
                self._cond.wait(left)
            return list(self._requests[path])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = Recorded(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.read(),
            arrived_at=time.time(),
        )
        with self._cond:
            self._requests[request.path].append(recorded)
            queue = self._scripts.get(request.path)
            reply = queue.popleft() if queue else None
            self._cond.notify_all()
        if reply is None:
            reply = self._default(recorded)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        parts = reply.split_writes if reply.split_writes is not None else self.split_writes
        if parts <= 1 or len(body) < 2:
            return web.Response(
                status=reply.status, body=body, headers=reply.headers, content_type=reply.content_type
            )
        return await self._split(request, reply, body, parts)

    async def _split(self, request: web.Request, reply: Reply, body: bytes, parts: int) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.content_type = reply.content_type
        response.content_length = len(body)
        await response.prepare(request)
        size = -(-len(body) // min(parts, len(body)))  # ceil: every part non-empty
        for start in range(0, len(body), size):
            if start:
                await asyncio.sleep(self.split_pause_s)  # the pause makes each write its own TCP segment
            await response.write(body[start : start + size])
        await response.write_eof()
        return response
