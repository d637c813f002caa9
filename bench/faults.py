"""`make faults`: the whole system under faults, on PostgreSQL and Redis of its own, with a count of what got lost.

It starts a private PostgreSQL cluster (initdb into a temporary directory, `pg_ctl` on a free port) and a
private redis-server (free port, nothing persisted), so it may kill, restart and FLUSHALL them; the shared
services on 5432/6379 are never touched. Per scenario it creates a fresh database (cloned from a migrated
template), starts the API (uvicorn), the delivery worker, the sweep consumer and beat, routes every event to a
local webhook receiver, posts events at a steady pace, injects one fault while they flow, and waits for
PostgreSQL to show every accepted event's delivery terminal.

Per scenario it prints: accepted (202) and rejected posts, delivered, dead by reason, lost, duplicate sends and
the time to drain after the fault ended. The receiver counts by `webhook-id` (the delivery id):
- lost = accepted events whose delivery never reached the receiver with a 2xx and is not dead either (or that
  never got a delivery row at all) when the drain deadline passed. It must be 0 everywhere: exit 1 otherwise;
- duplicate sends = 2xx answers beyond the first for one webhook-id (at-least-once; the receiver can drop them).

`python -m bench.faults` runs every scenario; `--short` a few with small counts (what
tests/integration/test_faults.py runs in `make test`); `--scenarios a,b` picks some.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from aiohttp import web

from bench.system import free_port, spawn_redis_server
from shared.crypto import generate_key_spec
from shared.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "hk_faults_admin_key_0123456789abcdef"
QUEUE = "herald-faults"
# How long the posting client keeps retrying one event (same Idempotency-Key) through an outage.
RETRY_FOR_S = 30.0
# Scaled-down timings so a scenario drains in seconds: retries after 0.5, 1, 2, 4, 8 s; a send times out after
# 2 s; a claimed delivery whose worker died is recovered after 8 s.
FAST_ENV = {
    "HERALD_RETRY_TIME_SCALE": "0.1",
    "HERALD_SWEEP_INTERVAL_S": "0.5",
    "HERALD_FANOUT_GRACE_S": "2",
    "HERALD_REQUEUE_AFTER_S": "5",
    "HERALD_SENDING_LEASE_S": "8",
    "HERALD_SEND_TIMEOUT_S": "2",
    "HERALD_WORKER_CONCURRENCY": "8",
    "HERALD_DATABASE_POOL_SIZE": "8",
    "HERALD_EGRESS_ALLOW_CIDRS": "127.0.0.1/32",
    "HERALD_WORKER_HEARTBEAT_INTERVAL_S": "1",
}


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")


# --- the receiver: counts 2xx answers per webhook-id; its mode is the fault ------------------------------
class Receiver:
    """A webhook receiver in a thread. Modes: ok (200), 503, 429 (Retry-After: 1), hang (no answer for 30 s)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.answered: Counter[str] = Counter()  # webhook-id -> 2xx answers
        self.requests = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="receiver")
        self._runner: web.AppRunner | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def reset(self) -> None:
        with self._lock:
            self.mode = "ok"
            self.answered.clear()
            self.requests = 0

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        with self._lock:
            self.requests += 1
            mode = self.mode
        if mode == "503":
            return web.Response(status=503, text="storm")
        if mode == "429":
            return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
        if mode == "hang":
            # Accept and never answer in time; whatever comes after the sender gave up is not a delivery.
            await asyncio.sleep(30)
            return web.Response(status=503, text="too late")
        with self._lock:
            self.answered[webhook_id] += 1
        return web.Response(status=200, text="ok")


# --- private services ---------------------------------------------------------------------------------
class Postgres:
    """A PostgreSQL cluster of our own: initdb into a temporary directory, pg_ctl on a free port."""

    def __init__(self, workdir: Path) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = bins[-1]
        self.root = workdir / "pg"
        self.root.mkdir()
        self.data = self.root / "data"
        self.port = free_port()
        # initdb refuses to run as root: run the server as the postgres user then.
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *argv: str) -> None:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=120)

    def init(self) -> Postgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self.start()

    def start(self) -> Postgres:
        # fsync off is safe here: the faults kill the server process, never the machine, so the OS page cache
        # survives. synchronous_commit must stay on: with it off, `pg_ctl stop -m immediate` drops commits the
        # API has already answered 202 for (a first run "lost" 7 events that way).
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", opts, "-w", "start"
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def sqlalchemy_url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql)


class Redis:
    """A redis-server of our own on a free port, nothing persisted: a restart comes back empty."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Redis:
        self.proc = spawn_redis_server(self.port, self.workdir / "redis.log", append_log=True)
        wait_until(lambda: self.client().ping(), 10, "the private redis-server")
        return self

    def client(self) -> redis.Redis[bytes]:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def flushall(self) -> None:
        self.client().flushall()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# --- one Herald per scenario --------------------------------------------------------------------------
class Herald:
    def __init__(self, workdir: Path, database_url: str, redis_port: int) -> None:
        self.workdir = workdir
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(FAST_ENV)
        env.update(
            HERALD_DATABASE_URL=database_url,
            HERALD_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            HERALD_ENCRYPTION_KEYS=generate_key_spec("faults"),
            HERALD_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
            HERALD_QUEUE_NAME=QUEUE,
            HERALD_WORKER_METRICS_HOST="127.0.0.1",
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.runs: Counter[str] = Counter()

    def argv(self, name: str) -> list[str]:
        celery = [sys.executable, "-m", "celery", "-A", "workers.app"]
        worker_flags = [
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            *("--include", "workers.health", "-l", "info"),
        ]
        if name == "api":
            return [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1"]
        if name == "worker":
            return [*celery, "worker", "-Q", QUEUE, "-c", "8", "-n", "worker@%h", *worker_flags]
        if name == "sweeper":
            return [*celery, "worker", "-Q", f"{QUEUE}.sweep", "-c", "1", "-n", "sweeper@%h", *worker_flags]
        return [*celery, "beat", "-l", "info", "-s", str(self.workdir / "beat-schedule")]

    def start(self, name: str) -> None:
        self.runs[name] += 1
        env = dict(self.env)
        argv = self.argv(name)
        if name == "api":
            argv += ["--port", str(self.api_port), "--log-level", "warning"]
        if name in ("worker", "sweeper"):
            metrics = self.workdir / f"metrics-{name}-{self.runs[name]}"
            metrics.mkdir()
            tmpdir = self.workdir / f"tmp-{name}-{self.runs[name]}"  # its liveness heartbeat file
            tmpdir.mkdir()
            env.update(
                PROMETHEUS_MULTIPROC_DIR=str(metrics), HERALD_WORKER_METRICS_PORT="0", TMPDIR=str(tmpdir)
            )
        log = self.workdir / f"{name}-{self.runs[name]}.log"
        self.procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}-{self.runs[name]}.log"

    def wait_ready(self, *names: str, timeout_s: float = 60) -> None:
        for name in names:
            if name == "api":
                wait_until(
                    lambda: httpx.get(self.api_url + "/readyz", timeout=2).status_code == 200,
                    timeout_s,
                    "API",
                )
            elif name in ("worker", "sweeper"):
                wait_until(lambda n=name: b"ready." in self.log(n).read_bytes(), timeout_s, name)  # type: ignore[misc]
            else:
                wait_until(lambda: b"beat: Starting" in self.log("beat").read_bytes(), timeout_s, "beat")

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def exited(self) -> list[str]:
        """Processes that exited without being told to (each name with its return code)."""
        return [f"{n} rc={p.returncode}" for n, p in self.procs.items() if p.poll() is not None]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


# --- scenarios ----------------------------------------------------------------------------------------
@dataclass
class World:
    herald: Herald
    pg: Postgres
    redis: Redis
    receiver: Receiver


def _pause(world: World, name: str, down_s: float) -> None:
    world.herald.kill(name)
    time.sleep(down_s)  # the outage itself: how long the process stays down
    world.herald.start(name)


def _receiver_mode(world: World, mode: str, storm_s: float) -> None:
    world.receiver.mode = mode
    time.sleep(storm_s)  # the storm's length
    world.receiver.mode = "ok"


def _redis_restart(world: World) -> None:
    world.redis.kill()
    time.sleep(5)  # Redis stays down 5 s, then comes back empty
    world.redis.start()


def _postgres_restart(world: World) -> None:
    world.pg.stop("immediate")  # a crash: no checkpoint, every connection dropped
    time.sleep(3)
    world.pg.start()


SCENARIOS: dict[str, Callable[[World], None]] = {
    "worker SIGKILL": lambda w: _pause(w, "worker", 2),
    "Redis FLUSHALL": lambda w: w.redis.flushall(),
    "Redis SIGKILL + empty restart": _redis_restart,
    "PostgreSQL restart": _postgres_restart,
    "API SIGKILL": lambda w: _pause(w, "api", 2),
    "receiver 503 storm": lambda w: _receiver_mode(w, "503", 4),
    "receiver 429 storm": lambda w: _receiver_mode(w, "429", 4),
    "hanging receiver": lambda w: _receiver_mode(w, "hang", 5),
    "beat down": lambda w: _pause(w, "beat", 6),
}
# What `make test` runs (tests/integration/test_faults.py): the broker faults the issue was about.
SHORT = ["Redis FLUSHALL", "Redis SIGKILL + empty restart"]
SLUGS = {name.lower().replace(" + ", "-").replace(" ", "-"): name for name in SCENARIOS}


@dataclass
class Result:
    scenario: str
    accepted: int = 0
    rejected: int = 0
    delivered: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicates: int = 0
    drain_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def post_events(
    api_url: str, count: int, rate_per_s: float, accepted: list[str], rejected: list[int]
) -> None:
    """Post `count` events at a steady pace, as a careful client does: each with its own Idempotency-Key, and a
    post that got no answer or a 5xx is retried with the same key for up to RETRY_FOR_S (so a 202 lost with a
    killed API is not a second event). `rejected` keeps the status of every failed try (0 = no answer)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    seen: set[str] = set()
    with httpx.Client(timeout=5) as client:
        for i in range(count):
            t0 = time.monotonic()
            body = {
                "type": "release.created",
                "project": "faults",
                "environment": "prod",
                "version": f"1.0.{i}",
                "url": f"https://example.com/r/{i}",
            }
            give_up = t0 + RETRY_FOR_S
            while True:
                status = 0
                try:
                    r = client.post(
                        api_url + "/v1/events/release",
                        headers={**headers, "Idempotency-Key": f"faults-{i}"},
                        json=body,
                    )
                    status = r.status_code
                    if status in (200, 202):
                        event_id = r.json()["data"]["event_id"]
                        if event_id not in seen:
                            seen.add(event_id)
                            accepted.append(event_id)
                        break
                except httpx.HTTPError:
                    pass  # the API was not there: nothing was acknowledged
                rejected.append(status)
                if (status and status < 500) or time.monotonic() > give_up:
                    break
                time.sleep(0.2)  # the client's retry pause
            time.sleep(max(0.0, 1 / rate_per_s - (time.monotonic() - t0)))  # pacing


def setup_route(api_url: str, receiver_url: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = httpx.post(
        api_url + "/v1/integrations",
        headers=headers,
        json={"name": "faults-hook", "provider": "webhook", "config": {"url": receiver_url}},
        timeout=10,
    )
    r.raise_for_status()
    r = httpx.post(
        api_url + "/v1/routes", headers=headers, json={"integration_id": r.json()["data"]["id"]}, timeout=10
    )
    r.raise_for_status()


def delivery_rows(dsn: str, event_ids: list[str]) -> dict[str, tuple[str, str, str | None]]:
    """event id -> (delivery id, state, dead reason)."""
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT event_id::text, id::text, state, dead_reason FROM delivery WHERE event_id = ANY(%s::uuid[])",
            (event_ids,),
        ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def drained(dsn: str, accepted: list[str]) -> bool:
    rows = delivery_rows(dsn, accepted)
    return len(rows) == len(accepted) and all(state in ("delivered", "dead") for _, state, _ in rows.values())


def run_scenario(
    name: str, world_parts: tuple[Postgres, Redis, Receiver], workdir: Path, args: Any
) -> Result:
    pg, rds, receiver = world_parts
    db = "faults_" + "".join(c for c in name.lower() if c.isalnum())[:40]
    pg.execute(f'CREATE DATABASE "{db}" TEMPLATE herald_template')
    rds.client().flushall()
    receiver.reset()
    herald = Herald(workdir, pg.sqlalchemy_url(db), rds.port)
    world = World(herald, pg, rds, receiver)
    result = Result(name)
    try:
        for proc in ("api", "worker", "sweeper", "beat"):
            herald.start(proc)
        herald.wait_ready("api", "worker", "sweeper", "beat")
        setup_route(herald.api_url, receiver.url)
        accepted: list[str] = []
        rejected: list[int] = []
        poster = threading.Thread(
            target=post_events, args=(herald.api_url, args.events, args.rate, accepted, rejected)
        )
        poster.start()
        # The fault strikes once a third of the events are in flight.
        wait_until(lambda: len(accepted) + len(rejected) >= args.events // 3, 60, "the first third of posts")
        SCENARIOS[name](world)
        fault_over = time.monotonic()
        poster.join()
        deadline = time.monotonic() + args.drain_timeout_s
        dsn = pg.dsn(db)
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error):
                if drained(dsn, accepted):
                    break
            time.sleep(0.2)
        result.drain_s = time.monotonic() - fault_over
        result.accepted, result.rejected = len(accepted), len(rejected)
        rows = delivery_rows(dsn, accepted)
        answered = dict(receiver.answered)
        for event_id in accepted:
            delivery_id, state, reason = rows.get(event_id, ("", "missing", None))
            if state == "dead":
                result.dead[reason or "?"] += 1
            elif state == "delivered" and answered.get(delivery_id, 0) >= 1:
                result.delivered += 1
            else:
                result.lost += 1
        result.duplicates = sum(n - 1 for n in answered.values() if n > 1)
        if result.lost:
            result.notes.append(f"not drained after {args.drain_timeout_s:.0f}s")
        result.notes += [f"{p} exited" for p in herald.exited()]
        if rejected:
            result.notes.append(f"retried posts: {dict(Counter(rejected))} (0 = no answer)")
    finally:
        herald.close()
    return result


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | accepted | delivered | dead (reason) | lost | duplicate sends | drain (s) | notes |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        dead = ", ".join(f"{n} {reason}" for reason, n in r.dead.items()) or "0"
        lines.append(
            f"| {r.scenario} | {r.accepted} | {r.delivered} | {dead} | {r.lost} | {r.duplicates} | "
            f"{r.drain_s:.1f} | {'; '.join(r.notes)} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def services(workdir: Path) -> Iterator[tuple[Postgres, Redis, Receiver]]:
    pg = Postgres(workdir).init()
    rds = Redis(workdir).start()
    receiver = Receiver().start()
    try:
        pg.execute("CREATE DATABASE herald_template")
        upgrade(pg.sqlalchemy_url("herald_template"))
        yield pg, rds, receiver
    finally:
        receiver.stop()
        rds.kill()
        with contextlib.suppress(Exception):
            pg.stop("immediate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Herald under faults: nothing accepted may be lost")
    parser.add_argument("--short", action="store_true", help=f"only {', '.join(SHORT)}, 20 events each")
    parser.add_argument("--scenarios", help=f"comma-separated, of: {', '.join(SLUGS)}")
    parser.add_argument("--events", type=int, help="events per scenario (default 200, 20 with --short)")
    parser.add_argument("--rate", type=float, default=40.0, help="events posted per second")
    parser.add_argument("--drain-timeout-s", type=float, default=90.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    names = SHORT if args.short else list(SCENARIOS)
    if args.scenarios:
        asked = [s.strip() for s in args.scenarios.split(",")]
        unknown = [s for s in asked if s not in SLUGS]
        if unknown:
            parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SLUGS)}")
        names = [SLUGS[s] for s in asked]
    args.events = args.events or (20 if args.short else 200)
    workdir = Path(tempfile.mkdtemp(prefix="herald-faults-"))
    os.chmod(workdir, 0o755)  # the postgres user must reach its directory inside
    print(f"herald faults: work directory {workdir}", flush=True)
    results: list[Result] = []
    try:
        with services(workdir) as parts:
            for name in names:
                scenario_dir = workdir / "".join(c if c.isalnum() else "-" for c in name.lower())
                scenario_dir.mkdir()
                result = run_scenario(name, parts, scenario_dir, args)
                results.append(result)
                print(f"  {name}: accepted {result.accepted}, lost {result.lost}", flush=True)
    finally:
        if not args.keep and all(r.lost == 0 for r in results):
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(results), flush=True)
    lost = sum(r.lost for r in results)
    if lost:
        print(f"LOST {lost} accepted event(s); logs kept in {workdir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
