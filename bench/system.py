"""What every benchmark here shares: the real system (`Herald`: fresh database, own Redis db, uvicorn API,
celery worker, beat), the local receiver process, and the small helpers around them (admin auth, a webhook
integration, receiver stats, percentiles, one concurrent accept-rate measurement).

Used by bench/run.py (`make bench`), bench/gateway.py and bench/pacing.py, so each brings the system up the
same way and their figures compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg
import redis

from shared.crypto import generate_key_spec
from shared.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
#: `make bench`'s database and Redis db; another benchmark passes its own to Herald so both can run at once
BENCH_DB = "herald_bench"
BENCH_REDIS_DB = 15
ADMIN_KEY = "hk_bench_" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def receiver_process(delay_ms: float) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.receiver", "--port", "0", "--delay-ms", str(delay_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)


class Herald:
    """The real system: fresh database, own Redis db, uvicorn API, worker, beat."""

    def __init__(
        self,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        *,
        database: str = BENCH_DB,
        redis_db: int = BENCH_REDIS_DB,
        ready_timeout_s: float = 120,
    ) -> None:
        self.workdir = workdir
        self.extra_env = extra_env or {}  # HERALD_* overrides for a phase of its own (bench/pacing.py)
        self.database = database
        self.redis_db = redis_db
        # a loaded 2-core machine can take longer than 30 s (importing the API alone has taken 28 s)
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Herald:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self.database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"
        upgrade(self.database_url)
        redis.Redis(db=self.redis_db).flushdb()
        metrics_dir = self.workdir / "metrics"
        metrics_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(
            HERALD_DATABASE_URL=self.database_url,
            HERALD_REDIS_URL=f"redis://127.0.0.1:6379/{self.redis_db}",
            HERALD_ENCRYPTION_KEYS=generate_key_spec("bench"),
            HERALD_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
            HERALD_EGRESS_ALLOW_CIDRS="127.0.0.1/32",
            HERALD_WORKER_METRICS_PORT=str(free_port()),
        )
        env.update(self.extra_env)
        api_env = dict(env)
        worker_env = dict(env, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
        self._spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.app:app",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            api_env,
            "api.log",
        )
        self.worker = self._spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "worker",
                "-Q",
                "herald,herald.sweep",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                os.environ.get("BENCH_WORKER_LOG", "warning"),
            ],
            worker_env,
            "worker.log",
        )
        self._spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "beat",
                "-l",
                "warning",
                "-s",
                str(self.workdir / "beat-schedule"),
            ],
            env,
            "beat.log",
        )
        wait_http(self.url + "/readyz", timeout_s=self.ready_timeout_s)
        time.sleep(2)  # let the worker's pool come up
        return self

    def _spawn(self, argv: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=(self.workdir / log).open("wb"), stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far by each part of the system on this machine (processes grouped by role)."""
        assert self.worker is not None
        roles = {self.procs[0].pid: "api", self.worker.pid: "worker", self.procs[2].pid: "beat"}
        totals: dict[str, float] = {}
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                times = proc.cpu_times()
                cmdline = " ".join(proc.info["cmdline"] or [])
            except psutil.Error:
                continue
            name = proc.info["name"] or ""
            role = (
                roles.get(proc.pid)
                or roles.get(proc.ppid())
                or (
                    "postgres"
                    if name.startswith("postgres")
                    else "redis"
                    if name.startswith("redis")
                    else "receiver"
                    if "bench.receiver" in cmdline
                    else "bench_client"
                    if proc.pid == os.getpid()
                    else "other"
                )
            )
            totals[role] = totals.get(role, 0.0) + times.user + times.system
        return totals

    def worker_rss_mb(self) -> float:
        """Resident memory of the worker (its process and any pool children)."""
        assert self.worker is not None
        main = psutil.Process(self.worker.pid)
        return float(sum(p.memory_info().rss for p in [main, *main.children(recursive=True)]) / 2**20)

    def __exit__(self, *_: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def receiver_stats(session: aiohttp.ClientSession, receiver_url: str) -> dict[str, Any]:
    base = receiver_url.rsplit("/", 1)[0]
    async with session.get(base + "/_stats") as resp:
        stats: dict[str, Any] = await resp.json()
        return stats


async def receiver_reset(session: aiohttp.ClientSession, receiver_url: str) -> None:
    async with session.post(receiver_url.rsplit("/", 1)[0] + "/_reset") as resp:
        await resp.read()


async def create_webhook(session: aiohttp.ClientSession, api: str, url: str, project: str) -> None:
    async with session.post(
        f"{api}/v1/integrations",
        headers=AUTH,
        json={"name": "bench", "provider": "webhook", "project": project, "config": {"url": url}},
    ) as resp:
        integration = await resp.json()
        assert resp.status == 201, integration
    async with session.post(
        f"{api}/v1/routes",
        headers=AUTH,
        json={"integration_id": integration["data"]["id"], "project": project},
    ) as resp:
        assert resp.status == 201, await resp.text()


async def wait_received(
    session: aiohttp.ClientSession, receiver_url: str, count: int, timeout_s: float
) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await receiver_stats(session, receiver_url))["count"] >= count:
            return time.time()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"receiver got fewer than {count} deliveries in {timeout_s}s")


@contextlib.contextmanager
def started(herald: Herald) -> Iterator[Herald]:
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


@dataclass
class Rate:
    """Requests of one measurement (or several, added): how many, the wall time they took, each one's latency."""

    count: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s else float("nan")

    @property
    def p50_ms(self) -> float:
        return pct(self.latencies_s, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return pct(self.latencies_s, 99) * 1000

    def __add__(self, other: Rate) -> Rate:
        return Rate(
            self.count + other.count, self.elapsed_s + other.elapsed_s, self.latencies_s + other.latencies_s
        )


async def accept_rate(
    url: str,
    body: Callable[[int], dict[str, Any]],
    count: int,
    concurrency: int,
    *,
    headers: dict[str, str] | None = None,
) -> Rate:
    """POST `body(i)` for i in range(count) from `concurrency` clients (keep-alive connections). Every answer
    must be 200 or 202: a refusal is a broken benchmark, not a figure."""
    latencies: list[float] = []
    remaining = list(range(count))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def sender() -> None:
            while remaining:
                i = remaining.pop()
                t0 = time.perf_counter()
                async with session.post(url, json=body(i), headers=headers) as resp:
                    data = await resp.read()
                latencies.append(time.perf_counter() - t0)
                assert resp.status in (200, 202), data[:500]

        started_at = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed_s = time.perf_counter() - started_at
    return Rate(count, elapsed_s, latencies)
