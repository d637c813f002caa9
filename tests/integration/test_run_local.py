"""`make run` (scripts/run-local.sh) for real: it refuses a taken port without printing the banner, prints the
banner only once /readyz answered, restarts a process that died, and stops everything on the first SIGTERM.

Each run uses its own port (HERALD_PORT), database, Redis db, queue and run directory (HERALD_RUN_DIR), so it
never touches a real `make run` on the same machine; it only ever signals processes it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import admin_exec, sqlalchemy_url
from tests.integration.conftest import claimed_redis_db
from tests.integration.stack import ROOT, free_port, wait_until

pytestmark = pytest.mark.integration
SCRIPT = ROOT / "scripts" / "run-local.sh"
BANNER = "Herald is up"


def script_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(HERALD_PORT=str(port), HERALD_RUN_DIR=str(tmp_path / "run"), HERALD_RUN_READY_TIMEOUT_S="60")
    env.update(extra)
    return env


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port held by something that accepts connections and never answers (the hang of issue 16)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_taken_port_exits_non_zero_without_the_banner_and_names_the_port(tmp_path: Path):
    """Repro (before): with port 8000 taken uvicorn logged `address already in use` and the full banner was
    printed about 10 s later anyway; with a silent listener on the port the readiness curl hung for good."""
    with silent_listener() as port:
        proc = subprocess.run(
            ["bash", str(SCRIPT)],
            cwd=ROOT,
            env=script_env(tmp_path, port),
            capture_output=True,
            text=True,
            timeout=60,  # a bound on the script, not a benchmark: it must not hang
            check=False,
        )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert BANNER not in output
    assert f"port {port}" in output and "already in use" in output, output
    assert f"pid={os.getpid()}" in output or "python" in output, output  # who holds it, when ss can tell


@pytest.fixture
def run_env(template_db: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    name = f"herald_t_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        with claimed_redis_db() as redis_db:
            yield script_env(
                tmp_path,
                free_port(),
                HERALD_DATABASE_URL=sqlalchemy_url(name),
                HERALD_REDIS_URL=f"redis://127.0.0.1:6379/{redis_db}",
                HERALD_QUEUE_NAME=f"herald-run-{uuid.uuid4().hex[:8]}",
                HERALD_WORKER_METRICS_PORT=str(free_port()),
            )
    finally:
        admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.timeout(180)
@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "celery").exists(), reason="needs `make install` (.venv)")
def test_run_restarts_a_dead_worker_and_stops_on_the_first_sigterm(run_env: dict[str, str], tmp_path: Path):
    """Repro (before): `wait -n` returned when any process exited and the EXIT trap then stopped the others, so
    one crash ended the whole system; SIGTERM ran the cleanup but not an exit."""
    out = tmp_path / "out.log"
    run_dir = Path(run_env["HERALD_RUN_DIR"])
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env=run_env,
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    children: list[int] = []
    stopped_cleanly = False
    try:
        wait_until(lambda: BANNER in out.read_text() or proc.poll() is not None, 120, "no banner")
        assert proc.poll() is None, out.read_text()
        assert ".venv/bin/herald" in out.read_text()
        assert f"{run_dir}/api.log" in out.read_text()
        children = [int((run_dir / f"{n}.pid").read_text()) for n in ("api", "worker", "sweeper", "beat")]

        worker_pid = children[1]
        os.kill(worker_pid, signal.SIGKILL)
        wait_until(
            lambda: "worker restarted" in out.read_text(), 30, f"worker not restarted: {out.read_text()}"
        )
        assert f"worker (pid {worker_pid}) exited" in out.read_text()
        assert proc.poll() is None  # the others kept running
        new_worker = int((run_dir / "worker.pid").read_text())
        children.append(new_worker)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143  # the first signal ends it
        for pid in children:
            wait_until(lambda p=pid: not _alive(p), 15, f"child {pid} still running after the script exited")
        stopped_cleanly = True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if not stopped_cleanly:
            for pid in children:
                # Only the processes this run started (their pids come from the script's pid files).
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) no longer runs.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False
