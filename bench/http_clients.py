"""Micro-benchmark behind the choice of HTTP client on the delivery hot path: httpx2 vs aiohttp.

A delivery worker sends many POSTs concurrently from one process with one shared client
(ARCHITECTURE.md, "Deliver"), so this measures exactly that: in one process, N POSTs of a ~1 KB JSON
body with C concurrent senders, against a fake receiver that answers at once and one that waits
50 ms (a fast provider). It prints, per client and delay: posts/s and p50/p99 request latency.

The receiver runs in its own process (``python -m bench.receiver``) so the client side owns its CPU;
on a 2-core machine that gives one core to each. Connections are opened by an untimed warm-up of C
requests, because a worker keeps its pool for hours and the steady state is what matters.

    python -m bench.http_clients --requests 3000 --concurrency 200
"""

from __future__ import annotations

import argparse
import asyncio
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx2

from bench.receiver import sample_body

REPO_ROOT = Path(__file__).resolve().parents[1]
RECEIVER_START_TIMEOUT_S = 15.0
RUN_TIMEOUT_S = 120.0  # per client and delay: keeps a stuck run bounded
REQUEST_TIMEOUT_S = 30.0

# One request: POST body to url, return the status code.
PostFn = Callable[[str, dict[str, Any]], Awaitable[int]]


@dataclass
class Result:
    client: str
    delay_ms: float
    concurrency: int
    requests: int
    errors: int
    duration_s: float
    latencies_ms: list[float]

    @property
    def posts_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def percentile_ms(self, pct: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else 0.0
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[pct - 1]


class ReceiverProcess:
    """``python -m bench.receiver`` in a child process; its URL is read from its first stdout line."""

    def __init__(self, delay_ms: float) -> None:
        self.delay_ms = delay_ms
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ReceiverProcess:
        cmd = [sys.executable, "-m", "bench.receiver", "--port", "0", "--delay-ms", str(self.delay_ms)]
        self._proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE)
        assert self._proc.stdout is not None
        # select() bounds the wait: a receiver that fails to start must not hang the benchmark.
        ready, _, _ = select.select([self._proc.stdout], [], [], RECEIVER_START_TIMEOUT_S)
        line = self._proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://"):
            self.__exit__()
            raise RuntimeError(f"receiver did not print its URL within {RECEIVER_START_TIMEOUT_S} s")
        self.url = line
        return self

    def __exit__(self, *exc_info: object) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def _drive(post: PostFn, url: str, bodies: list[dict[str, Any]], concurrency: int) -> Result:
    """Send every body with ``concurrency`` sender tasks; time the whole and each request."""
    latencies_ms: list[float] = []
    errors = 0
    next_index = 0

    async def sender() -> None:
        nonlocal errors, next_index
        # C long-lived tasks pulling from a shared index: cheaper than N tasks behind a semaphore,
        # so the figure is the client's cost, not task creation's.
        while next_index < len(bodies):
            body = bodies[next_index]
            next_index += 1
            started_s = time.perf_counter()
            try:
                status = await post(url, body)
            except (aiohttp.ClientError, httpx2.HTTPError, TimeoutError):
                errors += 1
                continue
            latencies_ms.append((time.perf_counter() - started_s) * 1000)
            if status != 200:
                errors += 1

    started_s = time.perf_counter()
    async with asyncio.timeout(RUN_TIMEOUT_S):
        await asyncio.gather(*(sender() for _ in range(concurrency)))
    duration_s = time.perf_counter() - started_s
    return Result("", 0, concurrency, len(bodies), errors, duration_s, latencies_ms)


async def _bench_httpx2(url: str, bodies: list[dict[str, Any]], concurrency: int) -> Result:
    # Default limits (100 connections, 20 kept alive) would queue or churn connections above c=20:
    # raise both to C so each sender keeps its own connection, as the worker's shared client will.
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:

        async def post(target: str, body: dict[str, Any]) -> int:
            response = await client.post(target, json=body)  # reads the body before returning
            return response.status_code

        await _drive(post, url, bodies[:concurrency], concurrency)  # warm-up: open the pool
        return await _drive(post, url, bodies, concurrency)


async def _bench_aiohttp(url: str, bodies: list[dict[str, Any]], concurrency: int) -> Result:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(target: str, body: dict[str, Any]) -> int:
            async with session.post(target, json=body) as response:
                await response.read()  # read the body, as httpx does, so both do the same work
                return response.status

        await _drive(post, url, bodies[:concurrency], concurrency)  # warm-up: open the pool
        return await _drive(post, url, bodies, concurrency)


CLIENTS: dict[str, Callable[[str, list[dict[str, Any]], int], Coroutine[Any, Any, Result]]] = {
    "httpx2": _bench_httpx2,
    "aiohttp": _bench_aiohttp,
}


def run(
    requests: int, concurrency: int, delays_ms: list[float], clients: list[str], body_size_bytes: int = 1024
) -> list[Result]:
    """Run every client against a receiver per delay and return the results, in that order."""
    bodies = [sample_body(f"client-{i}", body_size_bytes) for i in range(requests)]
    results: list[Result] = []
    for delay_ms in delays_ms:
        with ReceiverProcess(delay_ms) as receiver:
            for name in clients:
                result = asyncio.run(CLIENTS[name](receiver.url, bodies, concurrency))
                result.client, result.delay_ms = name, delay_ms
                results.append(result)
    return results


def format_table(results: list[Result]) -> str:
    header = (
        f"{'client':<8} {'delay_ms':>8} {'concurrency':>11} {'posts/s':>8} "
        f"{'p50_ms':>8} {'p99_ms':>8} {'errors':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.client:<8} {r.delay_ms:>8g} {r.concurrency:>11} {r.posts_per_s:>8.0f} "
            f"{r.percentile_ms(50):>8.1f} {r.percentile_ms(99):>8.1f} {r.errors:>6}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="httpx2 vs aiohttp: concurrent POST throughput")
    parser.add_argument("--requests", type=int, default=3000, help="timed POSTs per client and delay")
    parser.add_argument("--concurrency", type=int, default=200, help="concurrent senders (and pool size)")
    parser.add_argument("--delays-ms", default="0,50", help="comma-separated receiver delays")
    parser.add_argument("--clients", default="httpx2,aiohttp", help=f"comma-separated, from {list(CLIENTS)}")
    parser.add_argument("--body-bytes", type=int, default=1024)
    args = parser.parse_args(argv)

    delays_ms = [float(d) for d in args.delays_ms.split(",") if d]
    clients = [c for c in args.clients.split(",") if c]
    unknown = set(clients) - CLIENTS.keys()
    if unknown:
        parser.error(f"unknown client(s): {sorted(unknown)}")
    results = run(args.requests, args.concurrency, delays_ms, clients, args.body_bytes)
    print(format_table(results))


if __name__ == "__main__":
    main()
