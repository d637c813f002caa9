"""`python -m bench.gateway`: the PushGo-compatible gateway beside the release route, in one run.

Brings up the real system (bench/run.py's `Herald`: uvicorn API, celery worker, beat, fresh database) and a
receiver answering after 50 ms, then measures:
1. API only (a project without routes, so the API has the CPU): accepted/s and p50/p99 of
   - the release route (`/v1/events/release`, API key auth, one INSERT);
   - the gateway's `/message` (channel id + password, verification cached per process);
   - gateway lifecycles: `/event/create`, `--updates` x `/event/update`, `/event/close`, each lifecycle in order,
     `--concurrency` lifecycles at a time.
   The ratio /message : release is the cost of the gateway (channel auth and the dispatch transaction).
2. End to end: the same lifecycles for a project routed to a webhook at the 50 ms receiver: accepted/s and
   provider calls per lifecycle (one per dispatch until edit-in-place supersedes waiting updates).
Figures are noisy on a shared 2-core machine: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench import run as bench_run
from bench.run import (
    AUTH,
    Herald,
    create_webhook,
    pct,
    receiver_process,
    receiver_reset,
    wait_http,
    wait_received,
)


async def _channel(session: aiohttp.ClientSession, api: str, project: str) -> dict[str, str]:
    async with session.post(
        f"{api}/v1/channels",
        headers=AUTH,
        json={"name": "bench", "project": project, "password": "bench-pass"},
    ) as resp:
        data = await resp.json()
        assert resp.status == 201, data
    return {"channel_id": data["data"]["channel_id"], "password": "bench-pass"}


async def _timed_post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], latencies: list[float], **kw: Any
) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with session.post(url, json=body, **kw) as resp:
        data: dict[str, Any] = await resp.json()
    latencies.append(time.perf_counter() - t0)
    assert resp.status in (200, 202), data
    return data


async def release_phase(api: str, events: int, concurrency: int) -> dict[str, float]:
    project = f"rel-{uuid.uuid4().hex[:6]}"
    latencies: list[float] = []
    remaining = list(range(events))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def sender() -> None:
            while remaining:
                i = remaining.pop()
                body = {
                    "type": "release.created",
                    "project": project,
                    "environment": "prod",
                    "version": f"9.{i}",
                }
                await _timed_post(session, f"{api}/v1/events/release", body, latencies, headers=AUTH)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "per_s": events / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
    }


async def message_phase(api: str, events: int, concurrency: int) -> dict[str, float]:
    project = f"msg-{uuid.uuid4().hex[:6]}"
    latencies: list[float] = []
    remaining = list(range(events))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        creds = await _channel(session, api, project)

        async def sender() -> None:
            while remaining:
                i = remaining.pop()
                await _timed_post(session, f"{api}/message", {**creds, "title": f"build {i} done"}, latencies)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "per_s": events / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
    }


async def lifecycle_phase(
    api: str, project: str, lifecycles: int, updates: int, concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    remaining = list(range(lifecycles))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        creds = await _channel(session, api, project)

        async def one(i: int) -> None:
            t = 1713750000 + i
            base = {**creds, "status": "ongoing", "message": "replica lag", "severity": "high"}
            data = await _timed_post(
                session, f"{api}/event/create", {**base, "title": f"incident {i}", "event_time": t}, latencies
            )
            event_id = data["data"]["event_id"]
            for u in range(updates):
                body = {**base, "event_id": event_id, "message": f"update {u}", "event_time": t + u + 1}
                await _timed_post(session, f"{api}/event/update", body, latencies)
            body = {**base, "event_id": event_id, "status": "resolved", "event_time": t + updates + 1}
            await _timed_post(session, f"{api}/event/close", body, latencies)

        async def worker() -> None:
            while remaining:
                await one(remaining.pop())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    calls = lifecycles * (updates + 2)
    return {
        "per_s": calls / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "started": time.time() - elapsed,
    }


async def end_to_end(
    api: str, receiver_url: str, lifecycles: int, updates: int, concurrency: int
) -> dict[str, float]:
    project = f"e2e-{uuid.uuid4().hex[:6]}"
    async with aiohttp.ClientSession() as session:
        await create_webhook(session, api, receiver_url, project)
        await receiver_reset(session, receiver_url)
        result = await lifecycle_phase(api, project, lifecycles, updates, concurrency)
        calls = lifecycles * (updates + 2)
        try:
            done = await wait_received(session, receiver_url, calls, timeout_s=300)
        except TimeoutError:
            done = float("nan")  # reported as such: a stuck worker is a finding, not a reason to lose the run
        stats = await bench_run.receiver_stats(session, receiver_url)
    return {
        **result,
        "delivered_per_s": calls / (done - result["started"]),
        "provider_calls_per_lifecycle": stats["count"] / lifecycles,
    }


def _with_cpu(herald: Herald, calls: int, phase: Coroutine[Any, Any, dict[str, float]]) -> dict[str, float]:
    """Run a phase; add the API's and PostgreSQL's CPU per call, the figure that survives a busy machine."""
    before = herald.cpu_s()
    result = asyncio.run(phase)
    after = herald.cpu_s()
    for role in ("api", "postgres"):
        result[f"{role}_cpu_ms"] = (after.get(role, 0.0) - before.get(role, 0.0)) * 1000 / calls
    return result


@contextlib.contextmanager
def _started(herald: Herald) -> Iterator[Herald]:
    """`with Herald(...)`, but a start-up that fails half-way still stops what it started (Herald.__enter__
    raising leaves its API, worker and beat running, and a next run's tasks land on the orphans)."""
    try:
        herald.__enter__()
    except BaseException:
        herald.__exit__(None, None, None)
        raise
    try:
        yield herald
    finally:
        herald.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="release events and messages per phase")
    parser.add_argument("--lifecycles", type=int, default=200)
    parser.add_argument(
        "--updates", type=int, default=3, help="updates per lifecycle (between create and close)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    # Its own database and Redis db, so it can run beside `make bench` (bench/run.py's defaults).
    bench_run.BENCH_DB = "herald_bench_gateway"
    bench_run.BENCH_REDIS_DB = 14
    # On a loaded shared machine importing the API alone has taken 28 s: give start-up 3 minutes, not 30 s.
    bench_run.wait_http = functools.partial(wait_http, timeout_s=180)
    # Kept after the run: api.log, worker.log and beat.log are where a failed start explains itself.
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-gateway-"))
    print(f"logs in {workdir}")
    with receiver_process(50) as receiver_url, _started(Herald(workdir)) as herald:
        api = herald.url
        release = _with_cpu(herald, args.events, release_phase(api, args.events, args.concurrency))
        message = _with_cpu(herald, args.events, message_phase(api, args.events, args.concurrency))
        lifecycle = _with_cpu(
            herald,
            args.lifecycles * (args.updates + 2),
            lifecycle_phase(
                api, f"lc-{uuid.uuid4().hex[:6]}", args.lifecycles, args.updates, args.concurrency
            ),
        )
        e2e = asyncio.run(
            end_to_end(api, receiver_url, max(1, args.lifecycles // 2), args.updates, args.concurrency)
        )
    print(f"\nAPI only, {args.concurrency} clients (project without routes):")
    print(
        f"{'route':<44} {'accepted/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'API CPU ms':>10} {'PG CPU ms':>10}"
    )
    for name, r in (
        ("POST /v1/events/release (API key)", release),
        ("POST /message (channel id + password)", message),
        (f"lifecycle create+{args.updates}x update+close", lifecycle),
    ):
        print(
            f"{name:<44} {r['per_s']:>10.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['api_cpu_ms']:>10.2f}"
            f" {r['postgres_cpu_ms']:>10.2f}"
        )
    print(f"/message accept rate = {message['per_s'] / release['per_s']:.2f} x the release route's")
    print(
        f"/message API CPU per call = {message['api_cpu_ms'] / release['api_cpu_ms']:.2f} x the release route's"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (compare figures within one run only)")
    print(f"\nEnd to end, webhook at the 50 ms receiver, {max(1, args.lifecycles // 2)} lifecycles:")
    print(
        f"accepted/s {e2e['per_s']:.0f}, p50 {e2e['p50_ms']:.1f} ms, p99 {e2e['p99_ms']:.1f} ms, "
        f"delivered/s {e2e['delivered_per_s']:.0f}, provider calls per lifecycle "
        f"{e2e['provider_calls_per_lifecycle']:.1f}"
    )


if __name__ == "__main__":
    main()
