"""Pacing benchmark (issue 12): 20 destinations that each allow 5 msg/s, and a burst of 2,000 events.

A receiver process-local to this script enforces 5 requests per second per path (a sliding window; 429 with
`Retry-After` over it), like a vendor's per-webhook limit. Each destination is a webhook integration with
`pace_per_s=5` for its own path, and the 2,000 events are spread evenly over them. Printed:
- delivered/s over the whole drain (first accept to last delivery),
- 429s seen per 1,000 sends,
- achieved rate / the sum of the limits (goal: within 10 %, i.e. >= 0.9).

    python -m bench.pacing [--destinations 20] [--rate 5] [--events 2000] [--batch 100] [--no-pacing]

The bulkhead phase (`--bulkhead`): events at a steady 20/s to a destination answering in 50 ms, then the same to
it and to a destination that hangs 60 s (each event goes to both). Printed: the healthy destination's
accept->receive p99 alone and beside the hanging one, side by side, and their ratio (goal: at most 2).

    python -m bench.pacing --bulkhead [--bulkhead-events 300] [--bulkhead-rate 20]

The burst phase (`--burst`): 5,000 events posted in batches of 500 into ONE webhook answering in 50 ms (a
backfill), with the worker's backlog past the parking places, and then with it off
(`HERALD_BULKHEAD_BACKLOG_PER_DESTINATION=0`: the overflow waits for the sweeper's rounds, as before), side by side
in the same run. Printed: delivered/s from the first POST to the last delivery, worker and PostgreSQL CPU per
delivery, and PostgreSQL transactions committed.

    python -m bench.pacing --burst [--burst-events 5000] [--burst-delay-ms 50]
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
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiohttp import web

from bench.system import (
    AUTH,
    Herald,
    create_webhook,
    post_release_batch,
    receiver_process,
    receiver_reset,
    wait_received,
)

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


async def pacing_phase(
    herald: Herald, destinations: int, rate: int, events: int, batch: int = 100
) -> dict[str, Any]:
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

            def event(i: int) -> dict[str, Any]:
                return {
                    "type": "release.created",
                    "project": projects[i % destinations],
                    "environment": "prod",
                    "version": f"1.0.{i}",
                }

            async def sender() -> None:
                # In batches (POST /v1/events/batch) unless --batch 1: on a small machine the single-event
                # accept rate, not the destinations' limits, would otherwise bound the drain.
                while not queue.empty():
                    items = [queue.get_nowait() for _ in range(min(batch, queue.qsize()))]
                    if batch <= 1:
                        url, body = f"{herald.url}/v1/events/release", event(items[0])
                    else:
                        url = f"{herald.url}/v1/events/batch"
                        body = {"events": [{"kind": "release", **event(i)} for i in items]}
                    async with session.post(url, headers=AUTH, json=body) as resp:
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


# --- bulkhead phase: one destination hanging, another answering in 50 ms -------------------------------------


class LatencyReceiver:
    """Answers `/hang/...` after `hang_s` and everything else after `answer_s`; records, per path prefix, each
    request's accept->receive latency (the envelope's `created_at`, the API's accept time, to arrival)."""

    def __init__(self, hang_s: float, answer_s: float) -> None:
        self.hang_s = hang_s
        self.answer_s = answer_s
        self.latencies_s: dict[str, list[float]] = defaultdict(list)
        self.arrived = asyncio.Condition()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        arrived = time.time()
        prefix = request.path.split("/")[1]
        accepted = datetime.fromisoformat(body["data"]["created_at"]).timestamp()
        self.latencies_s[prefix].append(arrived - accepted)
        async with self.arrived:
            self.arrived.notify_all()
        await asyncio.sleep(self.hang_s if prefix == "hang" else self.answer_s)
        return web.json_response({"ok": True})

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        # Hanging handlers are cut off at cleanup instead of being waited for.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return runner


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def p99(values: list[float]) -> float:
    return quantile(values, 0.99)


async def _webhook(
    session: aiohttp.ClientSession, api: str, url: str, project: str, timeout_s: float
) -> None:
    body = {
        "name": f"bulkhead-{project}"[:100],
        "provider": "webhook",
        "project": project,
        "config": {"url": url, "timeout_s": timeout_s},
    }
    async with session.post(f"{api}/v1/integrations", headers=AUTH, json=body) as resp:
        integration = await resp.json()
        assert resp.status == 201, integration
    route = {"integration_id": integration["data"]["id"], "project": project}
    async with session.post(f"{api}/v1/routes", headers=AUTH, json=route) as resp:
        assert resp.status == 201, await resp.text()


async def _steady(session: aiohttp.ClientSession, api: str, project: str, events: int, per_s: float) -> None:
    """`events` releases of `project` at a steady `per_s` (a queueing burst would measure the queue)."""
    start = time.monotonic()
    for i in range(events):
        await asyncio.sleep(max(0.0, start + i / per_s - time.monotonic()))
        body = {"type": "release.created", "project": project, "environment": "prod", "version": f"2.0.{i}"}
        async with session.post(f"{api}/v1/events/release", headers=AUTH, json=body) as resp:
            assert resp.status == 202, await resp.text()


async def bulkhead_phase(herald: Herald, events: int, per_s: float, hang_s: float) -> dict[str, Any]:
    """The healthy destination's accept->receive p99 alone, then with a hanging destination receiving the same
    events (each event goes to both)."""
    receiver = LatencyReceiver(hang_s, 0.05)
    runner = await receiver.start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
            alone, shared = f"alone-{uuid.uuid4().hex[:6]}", f"shared-{uuid.uuid4().hex[:6]}"
            await _webhook(session, herald.url, f"{receiver.url}/ok-alone/{alone}", alone, 10.0)
            await _webhook(session, herald.url, f"{receiver.url}/ok-shared/{shared}", shared, 10.0)
            # The hanging destination gets the longest timeout a webhook allows (30 s): every send hangs that long.
            await _webhook(session, herald.url, f"{receiver.url}/hang/{shared}", shared, 30.0)
            await _steady(session, herald.url, alone, events, per_s)
            await _wait_for(receiver, "ok-alone", events)
            await _steady(session, herald.url, shared, events, per_s)
            await _wait_for(receiver, "ok-shared", events)
    finally:
        await runner.cleanup()
    without, with_hanging = receiver.latencies_s["ok-alone"], receiver.latencies_s["ok-shared"]
    return {
        "events_per_phase": events,
        "healthy_p50_alone_s": quantile(without, 0.5),
        "healthy_p50_beside_hanging_s": quantile(with_hanging, 0.5),
        "healthy_p95_alone_s": quantile(without, 0.95),
        "healthy_p95_beside_hanging_s": quantile(with_hanging, 0.95),
        "healthy_p99_alone_s": p99(without),
        "healthy_p99_beside_hanging_s": p99(with_hanging),
        "ratio_goal_at_most_2": p99(with_hanging) / p99(without) if without else float("nan"),
        "hanging_sends_started": len(receiver.latencies_s["hang"]),
    }


async def _wait_for(receiver: LatencyReceiver, prefix: str, count: int, timeout_s: float = 120.0) -> None:
    async with receiver.arrived:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                receiver.arrived.wait_for(lambda: len(receiver.latencies_s[prefix]) >= count), timeout_s
            )


# --- burst phase: a backfill into one healthy destination ---------------------------------------------------------

BURST_BATCH = 500


def _commits(herald: Herald) -> int:
    with psycopg.connect(herald.database_url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


async def burst_phase(herald: Herald, receiver_url: str, events: int) -> dict[str, Any]:
    project = f"burst-{uuid.uuid4().hex[:6]}"
    async with aiohttp.ClientSession() as session:
        await create_webhook(session, herald.url, receiver_url, project)
        await receiver_reset(session, receiver_url)
        cpu_before, commits_before = herald.cpu_s(), _commits(herald)
        started = time.time()
        for start in range(0, events, BURST_BATCH):
            versions = (f"7.{i}" for i in range(start, min(events, start + BURST_BATCH)))
            await post_release_batch(session, herald.url, project, versions)
        done = await wait_received(session, receiver_url, events, timeout_s=600)
        cpu_after, commits_after = herald.cpu_s(), _commits(herald)
    return {
        "delivered_per_s": events / (done - started),
        "worker_cpu_ms_per_delivery": (cpu_after["worker"] - cpu_before["worker"]) * 1000 / events,
        "postgres_cpu_ms_per_delivery": (cpu_after.get("postgres", 0.0) - cpu_before.get("postgres", 0.0))
        * 1000
        / events,
        "postgres_commits": commits_after - commits_before,
    }


def run_bursts(events: int, delay_ms: float, env: dict[str, str]) -> None:
    results: dict[str, dict[str, Any]] = {}
    for label, extra in (("backlog", {}), ("no backlog", {"HERALD_BULKHEAD_BACKLOG_PER_DESTINATION": "0"})):
        with (
            tempfile.TemporaryDirectory(prefix="herald-bench-burst-") as tmp,
            receiver_process(delay_ms) as receiver_url,
            Herald(Path(tmp), {**env, **extra}) as herald,
        ):
            results[label] = asyncio.run(burst_phase(herald, receiver_url, events))
    print(f"burst: {events} events in batches of {BURST_BATCH} into one webhook answering in {delay_ms:g} ms")
    print(f"  {'':30s} {'backlog':>12s} {'no backlog':>12s}")
    for key in results["backlog"]:
        a, b = results["backlog"][key], results["no backlog"][key]
        print(f"  {key:30s} {a:12.2f} {b:12.2f}" if isinstance(a, float) else f"  {key:30s} {a:12d} {b:12d}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--destinations", type=int, default=20)
    parser.add_argument("--rate", type=int, default=5, help="each destination's limit, msg/s")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--no-pacing", action="store_true", help="HERALD_PACING_ENABLED=false for comparison")
    parser.add_argument(
        "--batch", type=int, default=100, help="events per POST /v1/events/batch (1: the single-event route)"
    )
    parser.add_argument(
        "--bulkhead",
        action="store_true",
        help="the bulkhead phase instead: a healthy destination's p99 alone and beside one hanging 60 s",
    )
    parser.add_argument("--bulkhead-events", type=int, default=300)
    parser.add_argument(
        "--bulkhead-rate", type=float, default=20.0, help="events/s sent in the bulkhead phase"
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="the burst phase instead: a backfill into one webhook, with the worker's backlog and without",
    )
    parser.add_argument("--burst-events", type=int, default=5000)
    parser.add_argument("--burst-delay-ms", type=float, default=50.0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="HERALD_X=VALUE",
        help="a setting for this run (repeatable)",
    )
    args = parser.parse_args(argv)
    env = {"HERALD_PACING_ENABLED": "false"} if args.no_pacing else {}
    env.update(item.split("=", 1) for item in args.set)
    if args.burst:
        run_bursts(args.burst_events, args.burst_delay_ms, env)
        return
    with tempfile.TemporaryDirectory(prefix="herald-bench-pacing-") as tmp, Herald(Path(tmp), env) as herald:
        if args.bulkhead:
            figures = asyncio.run(bulkhead_phase(herald, args.bulkhead_events, args.bulkhead_rate, 60.0))
        else:
            figures = asyncio.run(pacing_phase(herald, args.destinations, args.rate, args.events, args.batch))
    if args.bulkhead:
        print("bulkhead (one destination hanging 60 s, the other answering in 50 ms):")
    else:
        print(f"pacing {'off' if args.no_pacing else 'on'}:")
    for key, value in figures.items():
        print(f"  {key:30s} {value:10.2f}" if isinstance(value, float) else f"  {key:30s} {value:10d}")


if __name__ == "__main__":
    main()
