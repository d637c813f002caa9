"""A whole Herald on real services: a cloned database, its own Redis db, celery worker and beat subprocesses,
and the API app in process (FastAPI's TestClient), all configured through HERALD_* like production."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient

from api.app import create_app
from shared.config import Settings
from shared.crypto import generate_key_spec

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "hk_test_admin_" + uuid.uuid4().hex

# The real schedule (5, 10, 20, 40, 80 s) scaled by 0.02: 0.1, 0.2, 0.4, 0.8, 1.6 s.
FAST_ENV = {
    "HERALD_RETRY_TIME_SCALE": "0.02",
    "HERALD_SWEEP_INTERVAL_S": "0.2",
    "HERALD_FANOUT_GRACE_S": "1",
    "HERALD_REQUEUE_AFTER_S": "3",
    "HERALD_SENDING_LEASE_S": "4",
    "HERALD_EGRESS_ALLOW_CIDRS": "127.0.0.1/32",
    # Small pools: the suite runs 4 test processes at once, each with stacks of several processes, against one
    # PostgreSQL whose max_connections is 100.
    "HERALD_DATABASE_POOL_SIZE": "4",
}


class PrivateRedis:
    """A redis-server of the test's own on a free port, for tests that SIGKILL, restart or FLUSHALL it.

    Nothing is persisted (`--save ''`, no AOF), so a restart comes back empty, as the shared one would.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._runs = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._runs += 1
        log = (self.workdir / f"redis-{self._runs}.log").open("wb")
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
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = self.client()
        wait_until(lambda: _pings(client), 10, f"private redis on :{self.port} never answered")
        client.close()
        return self

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=2)

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing written, every connection dropped."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Stack:
    def __init__(
        self,
        database_url: str,
        redis_db: int,
        workdir: Path,
        *,
        redis_port: int = 6379,
        **overrides: str,
    ) -> None:
        self.redis_db = redis_db
        self.redis_port = redis_port
        self.workdir = workdir
        self.env: dict[str, str] = {
            **FAST_ENV,
            "HERALD_DATABASE_URL": database_url,
            "HERALD_REDIS_URL": f"redis://127.0.0.1:{redis_port}/{redis_db}",
            "HERALD_ENCRYPTION_KEYS": generate_key_spec("t1"),
            "HERALD_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "HERALD_QUEUE_NAME": f"herald-test-{uuid.uuid4().hex[:8]}",
            **overrides,
        }
        self.redis = redis.Redis(host="127.0.0.1", port=redis_port, db=redis_db)
        self.redis.flushdb()
        self.worker: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.sweeper: subprocess.Popen[bytes] | None = None
        self._worker_runs = 0
        self._sweeper_runs = 0

    # configuration
    def settings(self, **overrides: Any) -> Settings:
        values = {k.removeprefix("HERALD_").lower(): v for k, v in self.env.items()}
        values.update(overrides)
        return Settings(**values)

    def client(self, **overrides: Any) -> TestClient:
        return TestClient(create_app(self.settings(**overrides)), raise_server_exceptions=False)

    # processes
    def _proc_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_worker(self, concurrency: int = 8, *, with_sweeper: bool = True) -> subprocess.Popen[bytes]:
        """The delivery worker (fanout, deliver, redrive, retention on the main queue), and, unless told not
        to, the sweep consumer beside it if it is not running yet (as make run, the image and Helm do)."""
        self._worker_runs += 1
        queue = self.env["HERALD_QUEUE_NAME"]
        self.worker_metrics_port = free_port()
        self.worker, self.worker_log = self._start_celery_worker(
            f"worker-{self._worker_runs}", queue, concurrency, metrics_port=self.worker_metrics_port
        )
        if with_sweeper and (self.sweeper is None or self.sweeper.poll() is not None):
            self.start_sweeper()
        return self.worker

    def start_sweeper(self) -> subprocess.Popen[bytes]:
        """The dedicated sweep consumer: one thread on `<queue>.sweep`, so sweeps never queue behind
        deliveries however busy the delivery worker's threads are."""
        self._sweeper_runs += 1
        queue = self.env["HERALD_QUEUE_NAME"]
        self.sweeper, self.sweeper_log = self._start_celery_worker(
            f"sweeper-{self._sweeper_runs}", f"{queue}.sweep", 1, metrics_port=0
        )
        return self.sweeper

    def heartbeat_file(self, name: str) -> Path:
        """The liveness heartbeat file of worker `name` (e.g. "worker-1"): each worker has its own TMPDIR."""
        return self.workdir / f"tmp-{name}" / "herald-worker-heartbeat"

    def _start_celery_worker(
        self, name: str, queues: str, concurrency: int, *, metrics_port: int
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = self.workdir / f"{name}.log"
        env = self._proc_env()
        env["HERALD_WORKER_METRICS_PORT"] = str(metrics_port)
        # As the start-up command does in production: the directory exists before any process imports
        # prometheus_client (one per process: a worker wipes it when it starts).
        metrics_dir = self.workdir / f"metrics-{name}"
        metrics_dir.mkdir(exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        # The liveness heartbeat file (workers/health.py) lives in TMPDIR: one per worker process here.
        tmpdir = self.heartbeat_file(name).parent
        tmpdir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "worker",
                "-c",
                str(concurrency),
                "-Q",
                queues,
                "--include",
                "workers.health",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "info",
                "-n",
                f"test{self.redis_db}-{name}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: b"ready." in log_path.read_bytes(), 30, f"{name} never became ready: {log_path}")
        return proc, log_path

    def start_beat(self) -> subprocess.Popen[bytes]:
        log_path = self.workdir / "beat.log"
        self.beat = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "beat",
                "-l",
                "info",
                "-s",
                str(self.workdir / "beat-schedule"),
            ],
            cwd=ROOT,
            env=self._proc_env(),
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: b"Sending due task" in log_path.read_bytes(), 30, "beat never sent a sweep")
        return self.beat

    def kill_worker(self, sig: int = signal.SIGKILL) -> int | None:
        """Signal the worker's whole process group (parent and pool children), as an OOM kill or node loss."""
        assert self.worker is not None
        os.killpg(self.worker.pid, sig)
        try:
            return self.worker.wait(30)
        finally:
            self.worker = None

    def stop_worker_gracefully(self, timeout_s: float = 30) -> int:
        assert self.worker is not None
        self.worker.send_signal(signal.SIGTERM)
        code = self.worker.wait(timeout_s)
        self.worker = None
        return code

    def close(self) -> None:
        for proc in (self.worker, self.sweeper, self.beat):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # A private Redis may already be gone (killed by the test); there is nothing left to flush then.
        with contextlib.suppress(redis.RedisError):
            self.redis.flushdb()
        self.redis.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float, message: str | Callable[[], str]) -> None:
    """Poll `predicate`; on timeout fail with `message` (a callable is asked then, so it shows the state at the
    end rather than at the call)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(message() if callable(message) else message)


# API helpers
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def create_webhook(
    client: TestClient,
    url: str,
    *,
    project: str | None = None,
    route_project: str | None = None,
    catch_all: bool = False,
    **config: Any,
) -> str:
    r = client.post(
        "/v1/integrations",
        headers=AUTH,
        json={
            "name": f"hook-{uuid.uuid4().hex[:6]}",
            "provider": "webhook",
            "project": project,
            "config": {"url": url, **config},
        },
    )
    assert r.status_code == 201, r.text
    integration_id: str = r.json()["data"]["id"]
    r = client.post(
        "/v1/routes",
        headers=AUTH,
        json={"integration_id": integration_id, "project": None if catch_all else (route_project or project)},
    )
    assert r.status_code == 201, r.text
    return integration_id


def release_event(project: str, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "release.created",
        "project": project,
        "environment": "prod",
        "version": "1.4.2",
        "mandatory": False,
        "description": "Fixes the login crash",
        "url": "https://admin.example/r/142",
        **overrides,
    }


def post_release(
    client: TestClient, project: str, headers: dict[str, str] | None = None, **overrides: Any
) -> str:
    r = client.post(
        "/v1/events/release", headers={**AUTH, **(headers or {})}, json=release_event(project, **overrides)
    )
    assert r.status_code == 202, r.text
    event_id: str = r.json()["data"]["event_id"]
    return event_id


TERMINAL = {"delivered", "dead", "skipped"}


def wait_for_deliveries(
    client: TestClient, event_id: str, count: int = 1, timeout_s: float = 20, states: set[str] = TERMINAL
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    deliveries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = client.get(f"/v1/events/{event_id}", headers=AUTH)
        assert r.status_code == 200, r.text
        deliveries = r.json()["data"]["deliveries"]
        if len(deliveries) >= count and all(d["state"] in states for d in deliveries):
            return deliveries
        time.sleep(0.1)
    raise AssertionError(f"deliveries of {event_id} not in {states} in {timeout_s}s: {deliveries}")
