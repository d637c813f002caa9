"""Fake webhook receiver for benchmarks: answers every POST with 200 after a fixed delay.

It stands in for a provider endpoint (Slack, a generic webhook ...) so benchmarks can measure the
sending side alone. A provider answers in 50-500 ms; ``delay_ms`` models that latency.

Every POST to any path:
  1. records the arrival wall-clock time (``time.time()``, taken before the delay) and, when the JSON
     body has a string ``data.event_id``, that id;
  2. sleeps ``delay_ms`` (``asyncio.sleep``, so thousands of requests can wait at once);
  3. answers ``200 {"ok": true}``.
An arrival is appended to the record when its response is about to be sent, so ``count`` is the
number of requests fully answered (a sender waiting on ``count`` has really finished).

``GET /_stats`` returns ``{"count": N, "arrivals": [[event_id_or_null, arrival_time_s], ...]}`` and
``POST /_reset`` clears the record.

Use it:
- from asyncio code: ``Receiver`` (``await start()``, ``.url``, ``await stop()``);
- from synchronous code: ``ReceiverThread`` (its own event loop in a daemon thread; ``.stats()``
  reads the record directly, without HTTP);
- as a process: ``python -m bench.receiver --port 0 --delay-ms 50`` prints its URL, then serves until
  SIGTERM or SIGINT. A separate process keeps the receiver off the CPU of the side being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
import time
from typing import Any

from aiohttp import web

# Large enough that a burst of 200+ simultaneous connects is never dropped by a full accept queue:
# a dropped SYN is retried after 1 s and would show up as a fake 1 s latency in the client figures.
_LISTEN_BACKLOG = 2048

_OK_BODY = b'{"ok":true}'


def sample_body(event_id: str, size_bytes: int = 1024) -> dict[str, Any]:
    """Return a webhook-like JSON body of roughly ``size_bytes`` that the receiver can attribute.

    The receiver picks up ``data.event_id``; ``data.text`` pads the body to a realistic size.
    """
    body: dict[str, Any] = {
        "type": "deploy.finished",
        "timestamp": "2026-11-23T08:00:00Z",
        "data": {"event_id": event_id, "project": "bench", "environment": "production", "text": ""},
    }
    pad_bytes = max(0, size_bytes - len(json.dumps(body)))
    body["data"]["text"] = "x" * pad_bytes
    return body


class Receiver:
    """An aiohttp.web server on the current event loop that counts and times incoming POSTs."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, delay_ms: float = 0.0) -> None:
        self.host = host
        self.port = port  # 0 asks the OS for a free port; the real one is known after start()
        self.delay_ms = delay_ms  # read per request, so it may be changed while running
        # Plain list appends: one entry per answered request, cheap enough for thousands per second.
        self._arrivals: list[tuple[str | None, float]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The webhook URL to POST to, e.g. ``http://127.0.0.1:41234/hook``."""
        if self._runner is None:
            raise RuntimeError("receiver not started")
        return f"http://{self.host}:{self.port}/hook"

    @property
    def base_url(self) -> str:
        """The server root, where ``/_stats`` and ``/_reset`` live."""
        return self.url.removesuffix("/hook")

    @property
    def count(self) -> int:
        """Requests answered so far (cheaper than ``stats()`` for polling)."""
        return len(self._arrivals)

    def stats(self) -> dict[str, Any]:
        """Snapshot of the record, in the same shape as ``GET /_stats``."""
        # list() copies atomically under the GIL, so this is safe to call from another thread
        # while the event loop keeps appending.
        arrivals = list(self._arrivals)
        return {"count": len(arrivals), "arrivals": [[event_id, t] for event_id, t in arrivals]}

    def reset(self) -> None:
        """Forget every recorded arrival."""
        # Rebind rather than clear(): a stats() copy in another thread never sees a half-cleared list.
        self._arrivals = []

    async def start(self) -> None:
        """Start listening; returns once the socket accepts connections."""
        app = web.Application()
        app.router.add_get("/_stats", self._handle_stats)
        app.router.add_post("/_reset", self._handle_reset)
        app.router.add_post("/{tail:.*}", self._handle_hook)
        # access_log=None: a log line per request would cost more CPU than the request itself.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=_LISTEN_BACKLOG, reuse_address=True)
        await site.start()
        self._runner = runner
        # The OS picked the port when port=0: read it back from the listening socket.
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle_hook(self, request: web.Request) -> web.Response:
        arrival_time_s = time.time()  # before the delay: when the sender's request reached us
        event_id: str | None = None
        try:
            payload = json.loads(await request.read())
            candidate = payload["data"]["event_id"]
            if isinstance(candidate, str):
                event_id = candidate
        except (ValueError, KeyError, TypeError):
            pass  # not our JSON shape: still a delivery, just not attributable to an event
        if self.delay_ms > 0:
            await asyncio.sleep(self.delay_ms / 1000)
        self._arrivals.append((event_id, arrival_time_s))
        return web.Response(body=_OK_BODY, content_type="application/json")

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=_OK_BODY, content_type="application/json")


class ReceiverThread:
    """A ``Receiver`` on its own event loop in a daemon thread, for synchronous callers.

    Shares the caller's GIL: fine for a few thousand requests/s, but for client benchmarks that must
    own their CPU, run ``python -m bench.receiver`` in another process instead.
    """

    def __init__(self, delay_ms: float = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.receiver = Receiver(host=host, port=port, delay_ms=delay_ms)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.receiver.url

    @property
    def base_url(self) -> str:
        return self.receiver.base_url

    @property
    def delay_ms(self) -> float:
        return self.receiver.delay_ms

    @delay_ms.setter
    def delay_ms(self, value: float) -> None:
        self.receiver.delay_ms = value

    @property
    def count(self) -> int:
        return self.receiver.count

    def stats(self) -> dict[str, Any]:
        """Same dict as ``GET /_stats``, read directly."""
        return self.receiver.stats()

    def reset(self) -> None:
        self.receiver.reset()

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the thread; returns once the receiver is listening (raises if it could not start)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="bench-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"receiver did not start within {timeout_s} s")
        if self._start_error is not None:
            raise RuntimeError("receiver failed to start") from self._start_error

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server and the thread. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self.receiver.stop(), loop).result(timeout_s)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._loop = None
        self._thread = None

    def __enter__(self) -> ReceiverThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.receiver.start())
        except BaseException as exc:  # report to start() instead of dying silently in the thread
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()


async def _serve(host: str, port: int, delay_ms: float) -> None:
    receiver = Receiver(host=host, port=port, delay_ms=delay_ms)
    await receiver.start()
    # The parent process reads this first line to learn the port, so flush it at once.
    print(receiver.url, flush=True)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        await stop_requested.wait()
    finally:
        await receiver.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only here)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait before answering each POST")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.delay_ms))


if __name__ == "__main__":
    main()
