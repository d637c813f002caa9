"""Worker and beat logs (shared/logging.py wired through workers/signals.py): the sweep's chatter is gone from
INFO, other task lines are not, no log line holds a webhook URL's secret, and HERALD_LOG_FORMAT=json prints JSON
lines; the worker's metrics bind HERALD_WORKER_METRICS_HOST."""

from __future__ import annotations

import json
import re
import socket
import uuid

import httpx
import pytest

from shared.tasknames import TASK_DELIVER, TASK_SWEEP
from tests.fakes.server import FakeServer, Reply
from tests.integration.stack import Stack, create_webhook, post_release, wait_for_deliveries

pytestmark = pytest.mark.integration


def _logs(stack: Stack) -> tuple[str, str]:
    workers = "".join(p.read_text(errors="replace") for p in sorted(stack.workdir.glob("worker-*.log")))
    return workers, (stack.workdir / "beat.log").read_text(errors="replace")


def test_sweeps_are_quiet_at_info_and_no_log_line_holds_the_url_secret(
    stack, api, receiver: FakeServer, project
):
    """Before: every sweep (each 0.2 s here, each second by default) logged "Task herald.sweep[...] received" and
    "... succeeded" in the worker and "Scheduler: Sending due task sweep (herald.sweep)" in beat, about 80 % of the
    worker log and all of beat's."""
    token = f"s3cret-{uuid.uuid4().hex}"
    path = f"/logs/{token}"
    # Two failures: each retry is published by a sweep, so at least two sweeps ran before the delivery lands.
    receiver.script(path, Reply(500, b"down"), Reply(503, b"down"))
    create_webhook(api, receiver.url(path) + f"?token={token}", project=project)
    [delivery] = wait_for_deliveries(api, post_release(api, project))
    assert delivery["state"] == "delivered" and delivery["attempt_count"] == 3

    worker_log, beat_log = _logs(stack)
    # Routine lines only: a sweep that expired or raised (a loaded machine, a database restart) still says so.
    routine = re.compile(rf"Task {re.escape(TASK_SWEEP)}\[[^\]]+\] (received|succeeded)")
    assert not routine.search(worker_log)
    assert f"Task {TASK_DELIVER}[" in worker_log and "received" in worker_log and "succeeded" in worker_log
    # beat's first sweep stays at INFO: the proof that beat runs.
    assert beat_log.count(f"({TASK_SWEEP})") == 1
    assert token not in worker_log and token not in beat_log


def test_json_log_lines_and_the_metrics_bind_address(own_stack: Stack, receiver: FakeServer, project):
    own_stack.env |= {"HERALD_LOG_FORMAT": "json", "HERALD_WORKER_METRICS_HOST": "127.0.0.2"}
    own_stack.start_worker(concurrency=2)
    own_stack.start_beat()
    token = f"s3cret-{uuid.uuid4().hex}"
    path = f"/json-logs/{token}"
    receiver.script(path, Reply(500, b"down"))
    with own_stack.client() as api:
        create_webhook(api, receiver.url(path), project=project)
        [delivery] = wait_for_deliveries(api, post_release(api, project))
    assert delivery["state"] == "delivered"

    worker_log, beat_log = _logs(own_stack)
    records = []
    for text in (worker_log, beat_log):
        # Celery's start-up banner is printed, not logged (`celery worker --quiet` drops it): every logged line
        # is one JSON object.
        records += [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    by_message = {r["message"]: r for r in records}
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(m.endswith(" ready.") for m in by_message)
    succeeded = [r for r in records if r.get("task_name") == TASK_DELIVER and "succeeded" in r["message"]]
    assert succeeded and all(r["level"] == "INFO" and r["task_id"] for r in succeeded)
    assert not [r for r in records if r.get("task_name") == TASK_SWEEP]
    assert token not in worker_log and token not in beat_log

    port = own_stack.worker_metrics_port
    assert httpx.get(f"http://127.0.0.2:{port}/metrics", timeout=5).status_code == 200
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
