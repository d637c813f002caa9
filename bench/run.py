"""`make bench`: Herald end to end on this machine, side by side with a bare-Celery baseline in the same run.

For each receiver delay (instant, 50 ms) it brings up the real system (uvicorn API, a celery worker (threads pool),
beat, PostgreSQL, Redis) against a fresh database, posts N release events through the API to one webhook
integration pointing at a local receiver (a separate process), and prints:
- API accept rate and p50/p99 request latency;
- end-to-end delivered/s (first POST to the receiver having answered every delivery);
- accept->receive latency p50/p95/p99 under that load, and idle (one event at a time);
- fan-out of one event to 1,000 integrations: time to create the delivery rows, and delivered/s;
- worker RSS (main process and pool children);
then the baseline (a bare Celery task per message doing a sync httpx.post, `-P threads -c 50`, no database) and
our throughput as a ratio of it. Figures are noisy on 2 cores (+-30 %): compare within one run.

Every run has a database of its own (`herald_bench_<random>`, dropped afterwards) and a redis-server of its own on
a free port (nothing persisted), so several runs on one machine (several engineers, or a test session) never
flush or read each other's data.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg
import redis

from bench.baseline_celery import run_baseline
from bench.prefill import prefill as prefill_history
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


class PrivateRedis:
    """A redis-server of the run's own on a free port, nothing persisted (no other run can flush it)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.workdir,
            stdout=(self.workdir / f"redis-{self.port}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
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
        self, workdir: Path, extra_env: dict[str, str] | None = None, *, workers: int = 1, apis: int = 1
    ) -> None:
        self.workdir = workdir
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
            wait_http(url + "/readyz", timeout_s=120)
        wait_http(self.url + "/readyz", timeout_s=120)  # a loaded 2-core machine can take longer than 30 s
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
        """With BENCH_PY_SPY_DIR set, sample the worker with py-spy during the phase (only the thread holding the GIL: where its CPU goes) (collapsed stacks, one
        line per stack with its sample count: `sort -k2 -n` or a flame graph tool reads them)."""
        out_dir = os.environ.get("BENCH_PY_SPY_DIR")
        if not out_dir or self.worker is None:
            yield
            return
        out = Path(out_dir) / f"worker-{phase}-{self.worker.pid}.txt"
        spy = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(self.worker.pid), "--rate", "200", "--format", "raw",
             "--output", str(out), "--nonblocking", "--threads", "--gil"],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "py-spy.log").open("wb"),
        )  # fmt: skip
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
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
                body = {
                    "events": [
                        {
                            "kind": "release",
                            "type": "release.created",
                            "project": project,
                            "environment": "prod",
                            "version": f"5.{i}",
                        }
                        for i in range(start, min(start + batch_size, events))
                    ]
                }
                async with session.post(f"{herald.url}/v1/events/batch", headers=AUTH, json=body) as resp:
                    data = await resp.json()
                assert resp.status == 202 and data["data"]["refused"] == 0, data

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


async def fanout_phase(herald: Herald, receiver_url: str, integrations: int) -> dict[str, float]:
    project = f"fan-{uuid.uuid4().hex[:6]}"
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await create_webhook(session, herald.url, f"{receiver_url}/{i}", project)

        await asyncio.gather(*(one(i) for i in range(integrations)))
        await receiver_reset(session, receiver_url)
        started = time.time()
        body = {"type": "release.created", "project": project, "environment": "prod", "version": "3.0.0"}
        async with session.post(f"{herald.url}/v1/events/release", headers=AUTH, json=body) as resp:
            event_id = (await resp.json())["data"]["event_id"]
        rows_done = await asyncio.to_thread(wait_rows, herald.database_url, event_id, integrations)
        done = await wait_received(session, receiver_url, integrations, timeout_s=120)
    return {
        "fanout_rows_s": rows_done - started,
        "fanout_all_delivered_s": done - started,
        "fanout_delivered_per_s": integrations / (done - started),
    }


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
                f"fan-out to {args.fanout} integrations ({delay_ms:g} ms receiver): rows in "
                f"{ours['fanout_rows_s']:.2f} s, all delivered in {ours['fanout_all_delivered_s']:.2f} s "
                f"({ours['fanout_delivered_per_s']:.0f}/s)"
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
