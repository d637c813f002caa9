"""`make bench`: Herald end to end on this machine, side by side with a bare-Celery baseline in the same run.

For each receiver delay (instant, 50 ms) it brings up the real system (uvicorn API, a celery worker (threads pool),
beat, PostgreSQL, Redis) against a fresh database, posts N release events through the API to one webhook
integration pointing at a local receiver (a separate process), and prints:
- API accept rate and p50/p99 request latency;
- end-to-end delivered/s (first POST to the receiver having answered every delivery);
- accept->receive latency p50/p95/p99 under that load, and idle (one event at a time);
- fan-out of one event to 1,000 integrations (three events in turn; the first, and the best, like the raw aiohttp
  limit printed beside it): time to create the delivery rows, and delivered/s;
- worker RSS (main process and pool children);
then the baseline (a bare Celery task per message doing a sync httpx.post, `-P threads -c 50`, no database) and
our throughput as a ratio of it. Figures are noisy on 2 cores (+-30 %): compare within one run.

Every run has a database of its own (`herald_bench_<random>`, dropped afterwards) and a redis-server of its own on
a free port (nothing persisted), so several runs on one machine (several engineers, or a test session) never
flush or read each other's data. The start-up of all that is bench/system.py's `Herald`, shared with the other
benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench.baseline_celery import run_baseline
from bench.prefill import prefill as prefill_history
from bench.system import (
    AUTH,
    Herald,
    PrivateRedis,
    create_webhook,
    pct,
    post_release_batch,
    receiver_process,
    receiver_reset,
    receiver_stats,
    wait_received,
)


async def load_phase(herald: Herald, receiver_url: str, events: int, concurrency: int) -> dict[str, float]:
    project = f"bench-{uuid.uuid4().hex[:6]}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await create_webhook(session, herald.url, receiver_url, project)
        await receiver_reset(session, receiver_url)
        accepted_at: dict[str, float] = {}
        request_s: list[float] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(events):
            queue.put_nowait(i)

        async def sender(api: str) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {
                    "type": "release.created",
                    "project": project,
                    "environment": "prod",
                    "version": f"1.0.{i}",
                    "description": "benchmark release",
                }
                t0 = time.perf_counter()
                async with session.post(f"{api}/v1/events/release", headers=AUTH, json=body) as resp:
                    data = await resp.json()
                request_s.append(time.perf_counter() - t0)
                assert resp.status == 202, data
                accepted_at[data["data"]["event_id"]] = time.time()

        cpu_before = herald.cpu_s()
        started = time.time()
        with herald.profiled("load"):
            await asyncio.gather(*(sender(herald.urls[n % len(herald.urls)]) for n in range(concurrency)))
            accept_done = time.time()
            done = await wait_received(session, receiver_url, events, timeout_s=300)
        cpu_after = herald.cpu_s()
        stats = await receiver_stats(session, receiver_url)
    latencies = [t - accepted_at[eid] for eid, t in stats["arrivals"] if eid in accepted_at]
    return {
        "accept_per_s": events / (accept_done - started),
        "api_p50_ms": pct(request_s, 50) * 1000,
        "api_p99_ms": pct(request_s, 99) * 1000,
        "delivered_per_s": events / (done - started),
        "e2e_p50_ms": pct(latencies, 50) * 1000,
        "e2e_p95_ms": pct(latencies, 95) * 1000,
        "e2e_p99_ms": pct(latencies, 99) * 1000,
        # CPU per event is the figure that survives a busy machine: on 2 cores the whole system is bounded
        # by about 2000 / (sum of these) events/s.
        **{
            f"cpu_ms_per_event_{role}": (cpu_after.get(role, 0.0) - cpu_before.get(role, 0.0)) * 1000 / events
            for role in (
                "api",
                "worker",
                "postgres",
                "postgres_shared",
                "redis",
                "beat",
                "receiver",
                "bench_client",
            )
        },
    }


async def api_phase(herald: Herald, events: int, concurrency: int) -> dict[str, float]:
    """The API on its own terms: events for a project with no routes, so the worker only marks them fanned out
    and the API has the CPU (the end-to-end phase shares it with the worker, PostgreSQL and the receiver)."""
    project = f"api-{uuid.uuid4().hex[:6]}"
    request_s: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        remaining = list(range(events))

        async def sender() -> None:
            while remaining:
                i = remaining.pop()
                body = {
                    "type": "release.created",
                    "project": project,
                    "environment": "prod",
                    "version": f"4.{i}",
                }
                t0 = time.perf_counter()
                async with session.post(f"{herald.url}/v1/events/release", headers=AUTH, json=body) as resp:
                    await resp.read()
                request_s.append(time.perf_counter() - t0)
                assert resp.status == 202

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed_s = time.perf_counter() - started
    return {
        "api_only_accept_per_s": events / elapsed_s,
        "api_only_p50_ms": pct(request_s, 50) * 1000,
        "api_only_p99_ms": pct(request_s, 99) * 1000,
    }


async def batch_phase(herald: Herald, events: int, concurrency: int, batch_size: int) -> dict[str, float]:
    """POST /v1/events/batch on the API-only terms of `api_phase` (a project without routes), `batch_size`
    events per request: events/s accepted, to compare with single-event accepts."""
    project = f"batch-{uuid.uuid4().hex[:6]}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        remaining = list(range(0, events, batch_size))

        async def sender() -> None:
            while remaining:
                start = remaining.pop()
                versions = (f"5.{i}" for i in range(start, min(start + batch_size, events)))
                await post_release_batch(session, herald.url, project, versions)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed_s = time.perf_counter() - started
    return {"api_batch_accept_per_s": events / elapsed_s}


async def idle_phase(herald: Herald, receiver_url: str, events: int) -> dict[str, float]:
    project = f"idle-{uuid.uuid4().hex[:6]}"
    async with aiohttp.ClientSession() as session:
        await create_webhook(session, herald.url, receiver_url, project)
        latencies = []
        for i in range(events):
            await receiver_reset(session, receiver_url)
            body = {
                "type": "release.created",
                "project": project,
                "environment": "prod",
                "version": f"2.0.{i}",
            }
            async with session.post(f"{herald.url}/v1/events/release", headers=AUTH, json=body) as resp:
                assert resp.status == 202
            accepted = time.time()
            await wait_received(session, receiver_url, 1, timeout_s=30)
            # The receiver stamps the arrival before its own delay: accept -> the request reaching it.
            [[_event_id, arrived]] = (await receiver_stats(session, receiver_url))["arrivals"]
            latencies.append(arrived - accepted)
            await asyncio.sleep(0.2)
    return {"idle_p50_ms": pct(latencies, 50) * 1000, "idle_p99_ms": pct(latencies, 99) * 1000}


def wait_rows(database_url: str, event_id: str, count: int, timeout_s: float = 60) -> float:
    """When the event's delivery rows were all committed (polled every 10 ms)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM delivery WHERE event_id = %s", (event_id,)).fetchone()
            if row and row[0] >= count:
                return float(time.time())
            time.sleep(0.01)
    raise TimeoutError(f"fewer than {count} delivery rows after {timeout_s}s")


async def fanout_phase(
    herald: Herald, receiver_url: str, integrations: int, rounds: int = 3
) -> dict[str, float]:
    """One event to `integrations` webhooks, `rounds` times (a new release each time): the first round, and the
    best one, measured the way the raw aiohttp limit beside it is (its first round opens the connections too).
    Each round runs from the POST to the last delivery received."""
    project = f"fan-{uuid.uuid4().hex[:6]}"
    connector = aiohttp.TCPConnector(limit=16)
    timings: list[tuple[float, float]] = []  # (rows committed, all delivered), seconds after the POST
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await create_webhook(session, herald.url, f"{receiver_url}/{i}", project)

        await asyncio.gather(*(one(i) for i in range(integrations)))
        cpu_before = herald.cpu_s()
        for n in range(rounds):
            await receiver_reset(session, receiver_url)
            started = time.time()
            body = {
                "type": "release.created",
                "project": project,
                "environment": "prod",
                "version": f"3.0.{n}",
            }
            async with session.post(f"{herald.url}/v1/events/release", headers=AUTH, json=body) as resp:
                event_id = (await resp.json())["data"]["event_id"]
            rows_done = await asyncio.to_thread(wait_rows, herald.database_url, event_id, integrations)
            done = await wait_received(session, receiver_url, integrations, timeout_s=120)
            timings.append((rows_done - started, done - started))
        cpu_after = herald.cpu_s()
    raw_per_s, raw_client_cpu_ms = await raw_aiohttp_per_s(receiver_url, integrations)
    best_rows_s, best_s = min(timings, key=lambda t: t[1])
    deliveries = rounds * integrations
    cpu_ms = {
        role: (cpu_after.get(role, 0.0) - cpu_before.get(role, 0.0)) * 1000 / deliveries
        for role in ("worker", "postgres", "receiver")
    }
    return {
        "fanout_worker_cpu_ms": cpu_ms["worker"],
        "fanout_postgres_cpu_ms": cpu_ms["postgres"],
        "fanout_receiver_cpu_ms": cpu_ms["receiver"],
        "fanout_raw_client_cpu_ms": raw_client_cpu_ms,
        "fanout_first_rows_s": timings[0][0],
        "fanout_first_delivered_s": timings[0][1],
        "fanout_first_delivered_per_s": integrations / timings[0][1],
        "fanout_rows_s": best_rows_s,
        "fanout_all_delivered_s": best_s,
        "fanout_delivered_per_s": integrations / best_s,
        "fanout_raw_aiohttp_per_s": raw_per_s,
    }


async def raw_aiohttp_per_s(receiver_url: str, posts: int, rounds: int = 3) -> tuple[float, float]:
    """The limit beside the fan-out figure: one aiohttp process (this one, the worker idle by now) posting a
    ~1 KB JSON body to the same `posts` receiver paths at once, as the worker's fan-out does. The best of
    `rounds` (the first opens the connections), so the ratio printed against it is the conservative one; and
    this process's CPU per post over all rounds (what the send alone costs, beside the worker's per delivery)."""
    body = {"type": "release.created", "project": "raw", "text": "x" * 900}
    best_s = float("inf")
    cpu_started_s = time.process_time()
    connector = aiohttp.TCPConnector(limit=posts)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            async with session.post(f"{receiver_url}/{i}", json=body) as resp:
                await resp.read()

        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(posts)))
            best_s = min(best_s, time.perf_counter() - started)
    return posts / best_s, (time.process_time() - cpu_started_s) * 1000 / (rounds * posts)


def run_herald(
    delay_ms: float,
    events: int,
    concurrency: int,
    fanout: int,
    idle: int,
    api_concurrency: int = 8,
    extra_env: dict[str, str] | None = None,
    batch_size: int = 100,
    prefill: int = 0,
) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp,
        receiver_process(delay_ms) as receiver_url,
        Herald(Path(tmp), extra_env) as herald,
    ):
        figures = asyncio.run(api_phase(herald, events, api_concurrency))
        if batch_size:
            figures |= asyncio.run(batch_phase(herald, events, min(api_concurrency, 4), batch_size))
        figures |= asyncio.run(load_phase(herald, receiver_url, events, concurrency))
        if prefill:
            # The same end-to-end phase again on a database holding `prefill` deliveries of history.
            figures |= prefill_history(herald.database_url.replace("+psycopg", ""), prefill)
            full = asyncio.run(load_phase(herald, receiver_url, events, concurrency))
            figures |= {f"prefilled_{k}": v for k, v in full.items()}
        figures |= asyncio.run(idle_phase(herald, receiver_url, idle))
        if fanout:
            with herald.profiled("fanout"):
                figures |= asyncio.run(fanout_phase(herald, receiver_url, fanout))
        figures["worker_rss_mb"] = herald.worker_rss_mb()
    return figures


def run_bare_baseline(delay_ms: float, messages: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="herald-bench-baseline-") as tmp,
        receiver_process(delay_ms) as receiver_url,
        PrivateRedis(Path(tmp)) as broker,
    ):
        return run_baseline(receiver_url, messages, concurrency=50, broker_url=broker.url())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Herald end-to-end benchmark with a bare-Celery baseline")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent API clients, end to end")
    parser.add_argument(
        "--api-concurrency", type=int, default=8, help="concurrent API clients, API-only phase"
    )
    parser.add_argument(
        "--fanout", type=int, default=1000, help="integrations for the fan-out phase (0: skip)"
    )
    parser.add_argument("--idle", type=int, default=20, help="events posted one at a time for idle latency")
    parser.add_argument("--delays-ms", default="0,50")
    parser.add_argument("--baseline-messages", type=int, default=2000)
    parser.add_argument(
        "--batch-size", type=int, default=100, help="events per POST /v1/events/batch in its phase (0: skip)"
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        metavar="DELIVERIES",
        help="then fill the database with this many deliveries (2 attempts each) and run end to end again",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="HERALD_X=VALUE",
        help="a setting for Herald's processes in this run (repeatable), e.g. to compare a setting's cost",
    )
    args = parser.parse_args(argv)
    extra_env = dict(kv.split("=", 1) for kv in args.env)

    rows = []
    for delay_ms in (float(d) for d in args.delays_ms.split(",")):
        print(f"\n--- receiver delay {delay_ms:g} ms: Herald ({args.events} events) ...", flush=True)
        ours = run_herald(
            delay_ms,
            args.events,
            args.concurrency,
            args.fanout if delay_ms else 0,
            args.idle,
            args.api_concurrency,
            extra_env,
            args.batch_size,
            args.prefill,
        )
        print(
            f"--- receiver delay {delay_ms:g} ms: bare Celery baseline ({args.baseline_messages} msgs) ...",
            flush=True,
        )
        base = run_bare_baseline(delay_ms, args.baseline_messages)
        rows.append((delay_ms, ours, base))
        for key, value in ours.items():
            print(f"  {key:28s} {value:10.1f}")
        print(f"  {'baseline_posts_per_s':28s} {base['posts_per_s']:10.1f}")

    print("\nSummary (this machine, this run)")
    print(
        f"{'receiver':>9} {'accept/s':>9} {'api p50/p99 ms':>15} {'delivered/s':>12} {'baseline/s':>11} {'ratio':>6}"
        f" {'e2e p50/p95/p99 ms':>20} {'idle p50 ms':>12}"
    )
    for delay_ms, ours, base in rows:
        ratio = ours["delivered_per_s"] / base["posts_per_s"] if base["posts_per_s"] else float("nan")
        print(
            f"{delay_ms:>7g}ms {ours['accept_per_s']:>9.0f} {ours['api_p50_ms']:>7.1f}/{ours['api_p99_ms']:<7.1f}"
            f" {ours['delivered_per_s']:>12.0f} {base['posts_per_s']:>11.0f} {ratio:>6.2f}"
            f" {ours['e2e_p50_ms']:>6.0f}/{ours['e2e_p95_ms']:.0f}/{ours['e2e_p99_ms']:<6.0f}"
            f" {ours['idle_p50_ms']:>12.0f}"
        )
    for delay_ms, ours, _ in rows:
        if "fanout_rows_s" in ours:
            print(
                f"fan-out to {args.fanout} integrations ({delay_ms:g} ms receiver), best of 3 events: rows in "
                f"{ours['fanout_rows_s']:.2f} s, all delivered in {ours['fanout_all_delivered_s']:.2f} s "
                f"({ours['fanout_delivered_per_s']:.0f}/s); raw aiohttp to the same receiver, best of 3 "
                f"{ours['fanout_raw_aiohttp_per_s']:.0f}/s: "
                f"{ours['fanout_delivered_per_s'] / ours['fanout_raw_aiohttp_per_s']:.2f} of it"
                f" (first event, connections not yet open: {ours['fanout_first_delivered_s']:.2f} s, "
                f"{ours['fanout_first_delivered_per_s'] / ours['fanout_raw_aiohttp_per_s']:.2f})"
            )
            print(
                f"fan-out CPU per delivery: worker {ours['fanout_worker_cpu_ms']:.2f} ms, PostgreSQL "
                f"{ours['fanout_postgres_cpu_ms']:.2f} ms, receiver {ours['fanout_receiver_cpu_ms']:.2f} ms; "
                f"raw aiohttp's client {ours['fanout_raw_client_cpu_ms']:.2f} ms per post"
            )
    for delay_ms, ours, _ in rows:
        print(
            f"API alone ({delay_ms:g} ms run, {args.api_concurrency} clients): {ours['api_only_accept_per_s']:.0f}"
            f" events/s accepted, p50 {ours['api_only_p50_ms']:.1f} ms, p99 {ours['api_only_p99_ms']:.1f} ms"
        )
    for delay_ms, ours, _ in rows:
        if "api_batch_accept_per_s" in ours:
            print(
                f"API batch ({delay_ms:g} ms run, {args.batch_size} events per POST /v1/events/batch): "
                f"{ours['api_batch_accept_per_s']:.0f} events/s accepted, "
                f"{ours['api_batch_accept_per_s'] / ours['api_only_accept_per_s']:.1f}x single-event accepts"
            )
    for _delay_ms, ours, _ in rows:
        if "prefilled_delivered_per_s" in ours:
            fill_s = sum(v for k, v in ours.items() if k.startswith("prefill_") and k.endswith("_s"))
            print(
                f"on {args.prefill} deliveries + {2 * args.prefill} attempts (filled in {fill_s:.0f} s):"
                f" {ours['prefilled_delivered_per_s']:.0f} delivered/s"
                f" ({ours['prefilled_delivered_per_s'] / ours['delivered_per_s']:.2f}x the empty database),"
                f" e2e p99 {ours['prefilled_e2e_p99_ms']:.0f} ms, worker {ours['prefilled_cpu_ms_per_event_worker']:.1f}"
                f" ms/event, PostgreSQL {ours['prefilled_cpu_ms_per_event_postgres']:.1f} ms/event"
            )
    for delay_ms, ours, _ in rows:
        print(f"worker RSS ({delay_ms:g} ms run): {ours['worker_rss_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
