"""Pacing benchmark (issue 12): 20 destinations that each allow 5 msg/s, and a burst of 2,000 events.

A receiver process-local to this script enforces 5 requests per second per path (a sliding window; 429 with
`Retry-After` over it), like a vendor's per-webhook limit. Each destination is a webhook integration with
`pace_per_s=5` for its own path, and the 2,000 events are spread evenly over them. Printed:
- delivered/s over the whole drain (first accept to last delivery),
- 429s seen per 1,000 sends,
- achieved rate / the sum of the limits (goal: within 10 %, i.e. >= 0.9).

    python -m bench.pacing [--destinations 20] [--rate 5] [--events 2000] [--no-pacing]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import threading
import time
import uuid
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.system import AUTH, Herald

LIMIT_WINDOW_S = 1.0


class LimitedReceiver:
    """200 within `rate` requests per second per path, else 429 + Retry-After; counts both."""

    def __init__(self, rate: int, expected: int) -> None:
        self.rate = rate
        self.expected = expected
        self.all_in = asyncio.Event()
        self.accepted = 0
        self.refused = 0
        self.last_accept_at = 0.0
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        now = time.monotonic()
        with self._lock:
            seen = self._seen[request.path]
            while seen and seen[0] <= now - LIMIT_WINDOW_S:
                seen.popleft()
            if len(seen) >= self.rate:
                self.refused += 1
                return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
            seen.append(now)
            self.accepted += 1
            self.last_accept_at = time.time()
            if self.accepted >= self.expected:
                self.all_in.set()
        return web.json_response({"ok": True})

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return runner


async def create_destination(
    session: aiohttp.ClientSession, api: str, url: str, project: str, rate: float
) -> None:
    body = {
        "name": f"paced-{project}",
        "provider": "webhook",
        "project": project,
        "config": {"url": url},
        "pace_per_s": rate,
        "pace_burst": 1,
    }
    async with session.post(f"{api}/v1/integrations", headers=AUTH, json=body) as resp:
        integration = await resp.json()
        assert resp.status == 201, integration
    route = {"integration_id": integration["data"]["id"], "project": project}
    async with session.post(f"{api}/v1/routes", headers=AUTH, json=route) as resp:
        assert resp.status == 201, await resp.text()


async def pacing_phase(herald: Herald, destinations: int, rate: int, events: int) -> dict[str, Any]:
    receiver = LimitedReceiver(rate, events)
    runner = await receiver.start()
    try:
        projects = [f"pace-{uuid.uuid4().hex[:6]}-{i}" for i in range(destinations)]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
            for i, project in enumerate(projects):
                await create_destination(session, herald.url, f"{receiver.url}/d{i}", project, rate)
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(events):
                queue.put_nowait(i)

            async def sender() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    body = {
                        "type": "release.created",
                        "project": projects[i % destinations],
                        "environment": "prod",
                        "version": f"1.0.{i}",
                    }
                    async with session.post(
                        f"{herald.url}/v1/events/release", headers=AUTH, json=body
                    ) as resp:
                        assert resp.status == 202, await resp.text()

            started = time.time()
            await asyncio.gather(*(sender() for _ in range(16)))
            accepted = time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(receiver.all_in.wait(), max(600.0, 5 * events / (rate * destinations)))
    finally:
        await runner.cleanup()
    drain_s = receiver.last_accept_at - started
    sends = receiver.accepted + receiver.refused
    return {
        "events": events,
        "delivered": receiver.accepted,
        "accept_s": accepted - started,
        "drain_s": drain_s,
        "delivered_per_s": receiver.accepted / drain_s if drain_s > 0 else 0.0,
        "sum_of_limits_per_s": float(rate * destinations),
        "achieved_vs_limits": (receiver.accepted / drain_s) / (rate * destinations) if drain_s > 0 else 0.0,
        "429_per_1000_sends": 1000 * receiver.refused / sends if sends else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--destinations", type=int, default=20)
    parser.add_argument("--rate", type=int, default=5, help="each destination's limit, msg/s")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--no-pacing", action="store_true", help="HERALD_PACING_ENABLED=false for comparison")
    args = parser.parse_args(argv)
    env = {"HERALD_PACING_ENABLED": "false"} if args.no_pacing else {}
    with tempfile.TemporaryDirectory(prefix="herald-bench-pacing-") as tmp, Herald(Path(tmp), env) as herald:
        figures = asyncio.run(pacing_phase(herald, args.destinations, args.rate, args.events))
    print(f"pacing {'off' if args.no_pacing else 'on'}:")
    for key, value in figures.items():
        print(f"  {key:24s} {value:10.2f}" if isinstance(value, float) else f"  {key:24s} {value:10d}")


if __name__ == "__main__":
    main()
