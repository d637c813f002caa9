"""What every benchmark here shares: the real system (`Herald`: a fresh database and a redis-server of its own,
uvicorn API(s), celery worker(s), beat), the local receiver process, and the small helpers around them (admin
auth, a webhook integration, receiver stats, percentiles, one concurrent accept-rate measurement).

Used by bench/run.py (`make bench`), bench/scaleout.py, bench/gateway.py, bench/pacing.py and bench/console.py,
so each brings the system up the same way (one start-up) and their figures compare.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
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
#: prefix of each run's own database (a random suffix is added)
BENCH_DB = "herald_bench"
#: the database number in the run's own redis-server
BENCH_REDIS_DB = 0
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


def spawn_redis_server(port: int, log: Path, *, append_log: bool = False) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:`port` that persists nothing (a restart comes back empty), its output in
    `log` (appended to where a benchmark restarts it: bench/faults.py)."""
    return subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=log.parent,
        stdout=log.open("ab" if append_log else "wb"),
        stderr=subprocess.STDOUT,
    )


class PrivateRedis:
    """A redis-server of the run's own on a free port, nothing persisted (no other run can flush it)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> PrivateRedis:
        self.proc = spawn_redis_server(self.port, self.workdir / f"redis-{self.port}.log")
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.__exit__()
                        raise RuntimeError(f"redis-server on :{self.port} did not come up") from None
                    time.sleep(0.05)
        finally:
            client.close()
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Herald:
    """The real system: a database and a redis-server of its own, uvicorn API, worker, beat."""

    def __init__(
        self,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        *,
        workers: int = 1,
        apis: int = 1,
        ready_timeout_s: float = 120,
    ) -> None:
        self.workdir = workdir
        # a loaded 2-core machine can take longer than 30 s (importing the API alone has taken 28 s)
        self.ready_timeout_s = ready_timeout_s
        self.extra_env = extra_env or {}  # HERALD_* overrides for a phase of its own (bench/pacing.py)
        self.ports = [free_port() for _ in range(max(apis, 1))]
        self.port = self.ports[0]
        #: every API replica (bench/scaleout.py spreads its clients over them); `url` is the first
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.url = self.urls[0]
        self.worker_count = max(workers, 1)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker: subprocess.Popen[bytes] | None = None  # the first worker process
        self.workers: list[subprocess.Popen[bytes]] = []
        self.apis: list[subprocess.Popen[bytes]] = []
        self.beat: subprocess.Popen[bytes] | None = None
        self.db_name = f"{BENCH_DB}_{uuid.uuid4().hex[:8]}"
        self.database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db_name}"
        self.redis = PrivateRedis(workdir)
        self._db_created = False

    def __enter__(self) -> Herald:
        # A start-up that fails half-way stops what it started (a next run's tasks would land on orphans).
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> Herald:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
            if os.environ.get("BENCH_PG_LOG_STATEMENTS"):
                # Profiling aid: every statement of this run in the server log (count them per delivery).
                conn.execute(f"ALTER DATABASE \"{self.db_name}\" SET log_statement = 'all'")
        self._db_created = True
        upgrade(self.database_url)
        self.redis.__enter__()
        metrics_dir = self.workdir / "metrics"
        metrics_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(
            HERALD_DATABASE_URL=self.database_url,
            HERALD_REDIS_URL=self.redis.url(BENCH_REDIS_DB),
            HERALD_ENCRYPTION_KEYS=generate_key_spec("bench"),
            HERALD_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
            HERALD_EGRESS_ALLOW_CIDRS="127.0.0.1/32",
            HERALD_WORKER_METRICS_PORT=str(free_port()),
        )
        env.update(self.extra_env)
        for n, port in enumerate(self.ports):
            argv = [sys.executable, "-m", "uvicorn", "api.app:app", "--port", str(port), "--log-level", "warning",
                    "--no-access-log"]  # fmt: skip
            self.apis.append(self._spawn(argv, dict(env), f"api-{n}.log"))
        for n in range(self.worker_count):
            # Each worker process serves its own metrics (its own port and multiprocess directory).
            own_metrics = metrics_dir / str(n)
            own_metrics.mkdir()
            worker_env = dict(
                env, PROMETHEUS_MULTIPROC_DIR=str(own_metrics), HERALD_WORKER_METRICS_PORT=str(free_port())
            )
            argv = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "herald,herald.sweep",
                    "-n", f"bench{n}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
                    "-l", os.environ.get("BENCH_WORKER_LOG", "warning")]  # fmt: skip
            self.workers.append(self._spawn(argv, worker_env, f"worker-{n}.log"))
        self.worker = self.workers[0]
        argv = [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "-l", "warning", "-s",
                str(self.workdir / "beat-schedule")]  # fmt: skip
        self.beat = self._spawn(argv, env, "beat.log")
        for url in self.urls[1:]:
            wait_http(url + "/readyz", timeout_s=self.ready_timeout_s)
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
        """CPU seconds used so far by each part of the system on this machine (processes grouped by role).

        `postgres` is the backends serving this run's database (their titles name it) and `redis` this run's
        own redis-server: other sessions on a shared machine land in `postgres_shared` (PostgreSQL's own
        background processes, and everyone else's backends) and `other`."""
        assert self.beat is not None
        roles = {p.pid: "api" for p in self.apis} | {p.pid: "worker" for p in self.workers}
        roles[self.beat.pid] = "beat"
        if self.redis.proc is not None:
            roles[self.redis.proc.pid] = "redis"
        own_db = f" {self.db_name} "
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
                    ("postgres" if own_db in cmdline else "postgres_shared")
                    if name.startswith("postgres")
                    else "receiver"
                    if "bench.receiver" in cmdline
                    else "bench_client"
                    if proc.pid == os.getpid()
                    else "other"
                )
            )
            totals[role] = totals.get(role, 0.0) + times.user + times.system
        return totals

    @contextmanager
    def profiled(self, phase: str) -> Iterator[None]:
        """With BENCH_PY_SPY_DIR set, sample the first worker and the first API process with py-spy during the
        phase, each in a file of its own (only the thread holding the GIL: where its CPU goes). Collapsed
        stacks, one line per stack with its sample count: `sort -k2 -n` or a flame graph tool reads them."""
        out_dir = os.environ.get("BENCH_PY_SPY_DIR")
        if not out_dir or self.worker is None:
            yield
            return
        spies: list[subprocess.Popen[bytes]] = []
        for role, proc in (("worker", self.worker), ("api", self.apis[0])):
            out = Path(out_dir) / f"{role}-{phase}-{proc.pid}.txt"
            argv = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(proc.pid), "--rate", "200",
                    "--format", "raw", "--output", str(out), "--nonblocking", "--threads", "--gil"]  # fmt: skip
            log = (self.workdir / f"py-spy-{role}.log").open("wb")
            spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log))
        try:
            yield
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            for spy in spies:
                try:
                    spy.wait(30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait(10)

    def worker_rss_mb(self) -> float:
        """Resident memory of the worker (its process and any pool children)."""
        total = 0
        for worker in self.workers:
            main = psutil.Process(worker.pid)
            total += sum(p.memory_info().rss for p in [main, *main.children(recursive=True)])
        return float(total / 2**20)

    def __exit__(self, *_: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs.clear()
        self.redis.__exit__()
        if self._db_created:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            self._db_created = False


async def post_release_batch(
    session: aiohttp.ClientSession, api: str, project: str, versions: Iterable[str]
) -> None:
    """POST /v1/events/batch with one `release.created` per version; every item must be accepted."""
    body = {
        "events": [
            {
                "kind": "release",
                "type": "release.created",
                "project": project,
                "environment": "prod",
                "version": v,
            }
            for v in versions
        ]
    }
    async with session.post(f"{api}/v1/events/batch", headers=AUTH, json=body) as resp:
        data = await resp.json()
    assert resp.status == 202 and data["data"]["refused"] == 0, data


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
