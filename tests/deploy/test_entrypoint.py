"""The image's commands, run for real: deploy/docker-entrypoint.sh with the virtualenv on PATH stands in for the
container (there is no Docker engine on the build machines), against real PostgreSQL, Redis and a fake webhook.

What this proves about the image: `migrate` migrates, `api` serves health and metrics, `beat` schedules the
sweeper, and `worker` consumes, serves its metrics port, keeps the heartbeat the liveness probe reads, and on
SIGTERM finishes the send in flight and exits 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PG_ADMIN_DSN, admin_exec, sqlalchemy_url
from tests.fakes.server import FakeServer, Reply
from tests.fakes.webhook import webhook_receiver
from tests.integration.conftest import claimed_redis_db
from tests.integration.stack import (
    Stack,
    create_webhook,
    free_port,
    post_release,
    wait_for_deliveries,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
# The checkout's venv, else the one running the tests (a git worktree has no .venv of its own): the entrypoint
# finds `herald` and `celery` on PATH, as in the image.
VENV_BIN = (
    ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "herald").exists() else Path(sys.executable).parent
)
HEARTBEAT = "herald-worker-heartbeat"

pytestmark = pytest.mark.integration


def entrypoint_env(base: dict[str, str], tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    # The image puts its virtualenv first on PATH; TMPDIR stands in for the pod's /tmp emptyDir.
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env["TMPDIR"] = str(tmpdir)
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(ENTRYPOINT), *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def alive(env: dict[str, str], max_age_s: int = 60) -> subprocess.CompletedProcess[str]:
    """The worker's liveness probe, exactly as the Helm chart runs it."""
    return subprocess.run(
        [str(ENTRYPOINT), "worker-alive", str(max_age_s)], env=env, capture_output=True, text=True, timeout=10
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture
def stack(template_db: str, tmp_path: Path) -> Iterator[Stack]:
    name = f"herald_t_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        with claimed_redis_db() as redis_db:
            s = Stack(sqlalchemy_url(name), redis_db, tmp_path)
            try:
                yield s
            finally:
                s.close()
    finally:
        admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def receiver() -> Iterator[FakeServer]:
    with webhook_receiver() as server:
        yield server


def test_worker_alive_check(tmp_path: Path) -> None:
    env = entrypoint_env(dict(os.environ), tmp_path)
    missing = alive(env)
    assert missing.returncode == 1 and "no heartbeat file" in missing.stderr

    beat_file = tmp_path / HEARTBEAT
    beat_file.touch()
    assert alive(env).returncode == 0
    old = time.time() - 120
    os.utime(beat_file, (old, old))
    stale = alive(env, 60)
    assert stale.returncode == 1 and "limit 60s" in stale.stderr
    assert alive(env, 600).returncode == 0


def test_migrate_command_migrates_an_empty_database(tmp_path: Path) -> None:
    name = f"herald_t_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}"')
    try:
        env = entrypoint_env({**os.environ, "HERALD_DATABASE_URL": sqlalchemy_url(name)}, tmp_path)
        for _ in range(2):  # a re-run (the next upgrade's hook) is a no-op
            done = subprocess.run(
                [str(ENTRYPOINT), "migrate"], env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stdout + done.stderr
        dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            assert row is not None and row[0]
            assert conn.execute("SELECT to_regclass('delivery')").fetchone() == ("delivery",)
    finally:
        admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_api_and_beat_commands(stack: Stack, tmp_path: Path) -> None:
    env = entrypoint_env(stack._proc_env(), tmp_path)
    port = free_port()
    # Later options win over the entrypoint's defaults (--host 0.0.0.0 --port 8000).
    api = start(["api", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "api.log")
    beat = start(["beat"], env, tmp_path / "beat.log")
    try:
        wait_until(
            lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 30, "the API never answered"
        )
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "herald_queue_depth" in body
        wait_until(
            lambda: b"Sending due task" in (tmp_path / "beat.log").read_bytes(),
            30,
            "beat never scheduled a sweep",
        )
        assert (tmp_path / "celerybeat-schedule").exists() or list(tmp_path.glob("celerybeat-schedule*"))

        # SIGTERM (what tini forwards) stops both cleanly.
        for proc in (api, beat):
            proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught (so it dies "by" SIGTERM).
        assert api.wait(20) in (0, -signal.SIGTERM)
        api_log = (tmp_path / "api.log").read_text()
        assert "Application shutdown complete" in api_log and "Finished server process" in api_log, api_log[
            -2000:
        ]
        assert beat.wait(20) == 0, (tmp_path / "beat.log").read_text()[-2000:]
    finally:
        stop(api)
        stop(beat)


def test_worker_command_heartbeat_metrics_and_warm_shutdown(
    stack: Stack, receiver: FakeServer, tmp_path: Path
) -> None:
    metrics_port = free_port()
    env = entrypoint_env({**stack._proc_env(), "HERALD_WORKER_METRICS_PORT": str(metrics_port)}, tmp_path)
    log = tmp_path / "worker.log"
    worker = start(["worker", "--concurrency", "2", "-n", f"entrypoint-{uuid.uuid4().hex[:6]}@%h"], env, log)
    try:
        # The heartbeat appears once the consumer runs, and the probe accepts it.
        wait_until(lambda: (tmp_path / HEARTBEAT).exists(), 30, f"no heartbeat: {log.read_text()[-2000:]}")
        assert alive(env).returncode == 0
        # The entrypoint pointed prometheus' multiprocess mode into TMPDIR, and the metrics port serves.
        assert (tmp_path / "herald-metrics").is_dir()
        assert http_get(f"http://127.0.0.1:{metrics_port}/metrics")[0] == 200

        hook = f"/hook/{uuid.uuid4().hex}"
        receiver.script(hook, Reply(200, b"slow but fine", delay_s=3))
        with stack.client() as api:
            create_webhook(api, receiver.url(hook), project="entrypoint")
            event_id = post_release(api, "entrypoint")
            assert receiver.wait_for(hook, 1), "the worker never sent"
            # The pool child's in-flight gauge reaches the main process's metrics port (multiprocess mode).
            _, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert "herald_worker_inflight 1.0" in body, body
            # The send is in flight (the receiver answers in 2 s): SIGTERM now, as Kubernetes would.
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0, log.read_text()[-3000:]
            # Nothing runs any more: the outcome was written before the worker exited.
            [delivery] = wait_for_deliveries(api, event_id, timeout_s=1)
            assert delivery["state"] == "delivered"
            assert len(receiver.requests(hook)) == 1
        assert "Warm shutdown" in log.read_text()
        # The heartbeat file is left in place (a shutdown in progress must not fail liveness), but it is not
        # touched any more, so a stopped worker fails the probe once it is older than the limit.
        beat_file = tmp_path / HEARTBEAT
        assert beat_file.exists()
        touched = beat_file.stat().st_mtime
        time.sleep(1.2)
        assert beat_file.stat().st_mtime == touched
        assert alive(env, 1).returncode == 1
    finally:
        stop(worker)
