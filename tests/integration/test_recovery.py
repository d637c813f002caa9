"""Nothing lost: killed workers, a flushed Redis, a killed Redis and an unreachable Redis, each on a Herald of
its own. The tests that FLUSHALL or kill Redis run a private redis-server (never the shared one on 6379)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import admin_exec, sqlalchemy_url
from tests.fakes.server import FakeServer, Reply
from tests.integration.stack import (
    ROOT,
    PrivateRedis,
    Stack,
    create_webhook,
    post_release,
    wait_for_deliveries,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_stack(template_db: str, tmp_path: Path, private_redis: PrivateRedis) -> Iterator[Stack]:
    """A Herald of the test's own on a private Redis (db 0 of it), for tests that FLUSHALL or kill Redis."""
    name = f"herald_t_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    s = Stack(sqlalchemy_url(name), 0, tmp_path, redis_port=private_redis.port)
    try:
        yield s
    finally:
        s.close()
        admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def webhook_ids(receiver: FakeServer, path: str) -> list[str]:
    return [r.headers["webhook-id"] for r in receiver.requests(path)]


def test_worker_sigkilled_mid_send_still_delivers_after_restart(
    own_stack: Stack, receiver: FakeServer, hook_path, project
):
    # The first request hangs long enough for us to kill the worker while it is in flight.
    receiver.script(hook_path, Reply(200, b"too late", delay_s=30))
    own_stack.start_beat()
    own_stack.start_worker()
    with own_stack.client() as api:
        create_webhook(api, receiver.url(hook_path), project=project)
        event_id = post_release(api, project)
        receiver.wait_for(hook_path, 1)
        own_stack.kill_worker(signal.SIGKILL)
        [delivery] = wait_for_deliveries(api, event_id, states={"sending"})  # the dead worker's claim

        own_stack.start_worker()
        [delivery] = wait_for_deliveries(api, event_id, timeout_s=30)
        assert delivery["state"] == "delivered"
        requests = receiver.requests(hook_path)
        assert len(requests) == 2
        # At least once, with the same id, so the receiver can drop the duplicate.
        assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"] == delivery["id"]
        outcomes = [a["outcome"] for a in delivery["attempts"]]
        assert outcomes == ["retrying", "delivered"]  # the lost attempt is on record
        assert delivery["attempts"][0]["error_class"] == "worker_lost"


def test_redis_flushall_after_202_still_delivers(
    private_stack: Stack, receiver: FakeServer, hook_path, project
):
    private_stack.start_beat()
    with private_stack.client() as api:
        create_webhook(api, receiver.url(hook_path), project=project)
        event_id = post_release(api, project)  # fanout is published, but no worker is running yet
        queue = private_stack.env["HERALD_QUEUE_NAME"]
        wait_until(lambda: private_stack.redis.llen(queue) >= 1, 5, "fanout was never published")
        private_stack.redis.flushall()  # a private redis-server: nobody else's data
        private_stack.start_worker()
        [delivery] = wait_for_deliveries(api, event_id, timeout_s=30)
        assert delivery["state"] == "delivered"
        assert webhook_ids(receiver, hook_path) == [delivery["id"]]


def test_redis_unreachable_at_ingest_event_is_accepted_and_delivered_later(
    own_stack: Stack, receiver: FakeServer, hook_path, project
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with own_stack.client(redis_url=f"redis://127.0.0.1:{dead_port}/0") as cut_off:
        create_webhook(cut_off, receiver.url(hook_path), project=project)
        t0 = time.monotonic()
        event_id = post_release(cut_off, project)
        accept_s = time.monotonic() - t0
        assert cut_off.get("/readyz").json()["data"]["checks"]["redis"].startswith("unreachable")
    assert accept_s < 10  # it answered, it did not hang on the broker (a bound, not a benchmark)
    own_stack.start_beat()
    own_stack.start_worker()
    with own_stack.client() as api:
        [delivery] = wait_for_deliveries(api, event_id, timeout_s=30)
        assert delivery["state"] == "delivered"


def test_sigterm_finishes_in_flight_sends(own_stack: Stack, receiver: FakeServer, hook_path, project):
    receiver.script(hook_path, Reply(200, b"slow but fine", delay_s=2))
    own_stack.start_worker()
    with own_stack.client() as api:
        create_webhook(api, receiver.url(hook_path), project=project)
        event_id = post_release(api, project)
        receiver.wait_for(hook_path, 1)
        assert own_stack.stop_worker_gracefully() == 0
        # No beat and no worker now: the outcome must have been written before the worker exited.
        [delivery] = wait_for_deliveries(api, event_id, timeout_s=1)
        assert delivery["state"] == "delivered"
        assert len(receiver.requests(hook_path)) == 1


def test_sweeper_recovers_a_batch_whose_message_was_lost(private_stack: Stack, receiver: FakeServer, project):
    """Many deliveries in flight when the worker is killed and Redis flushed: each arrives, and a delivery
    the dead worker had already sent is sent again at most once more (at least once, same webhook-id)."""
    paths = [f"/many/{project}/{i}" for i in range(20)]
    private_stack.start_beat()
    with private_stack.client() as api:
        for path in paths:
            create_webhook(api, receiver.url(path), project=project)
        event_id = post_release(api, project)
        private_stack.start_worker()
        wait_until(lambda: any(receiver.requests(p) for p in paths), 20, "nothing delivered")
        private_stack.kill_worker(signal.SIGKILL)
        private_stack.redis.flushall()  # a private redis-server: nobody else's data
        sent_before_kill = {p for p in paths if receiver.requests(p)}
        private_stack.start_worker()
        deliveries = wait_for_deliveries(api, event_id, count=20, timeout_s=40)
        assert {d["state"] for d in deliveries} == {"delivered"}
        for path in paths:
            ids = webhook_ids(receiver, path)
            assert len(set(ids)) == 1, (path, ids)  # one delivery per destination, one id
        # Exactly once where the worker had not reached the destination before it died; a destination it
        # had reached may see the same webhook-id once more (its outcome died with the worker).
        for path in set(paths) - sent_before_kill:
            assert len(webhook_ids(receiver, path)) == 1, path
        for path in sent_before_kill:
            assert len(webhook_ids(receiver, path)) <= 2, path


def test_worker_survives_redis_sigkill_and_empty_restart(
    private_stack: Stack, private_redis: PrivateRedis, receiver: FakeServer, hook_path, project
):
    """Redis dies while the worker holds an unacknowledged message, and comes back empty.

    Repro (celery 5.7.0 / kombu 5.7.0 / redis-py 8.1): the worker logged
    `Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")` from
    `on_connection_error_after_connected` and exited with rc 1, so nothing accepted before the outage and
    nothing posted after it was ever delivered. The worker must ride it out and resume by itself; the sweeper
    re-publishes what the empty Redis lost.
    """
    # The first send hangs, so the worker holds its deliver message unacknowledged when Redis dies.
    receiver.script(hook_path, Reply(200, b"slow", delay_s=3))
    private_stack.start_beat()
    worker = private_stack.start_worker()
    worker_log = private_stack.worker_log
    with private_stack.client() as api:
        create_webhook(api, receiver.url(hook_path), project=project)
        before = [post_release(api, project, version=f"1.0.{i}") for i in range(5)]
        receiver.wait_for(hook_path, 1)
        private_redis.kill()
        wait_until(
            lambda: b"Connection to broker lost" in worker_log.read_bytes() or worker.poll() is not None,
            20,
            "the worker never noticed the broker was gone",
        )
        # Redis stays down for a few seconds (the worker retries its connection meanwhile), then comes back
        # with nothing in it. Waiting for a reconnect attempt to fail is the condition, not a sleep.
        wait_until(
            lambda: (
                worker_log.read_bytes().count(b"Cannot connect to redis") >= 1 or worker.poll() is not None
            ),
            20,
            "the worker never retried its broker connection",
        )
        private_redis.start()
        after = [post_release(api, project, version=f"2.0.{i}") for i in range(5)]
        for event_id in before + after:
            [delivery] = wait_for_deliveries(api, event_id, timeout_s=60)
            assert delivery["state"] == "delivered", delivery
        assert worker.poll() is None, worker_log.read_text()[-4000:]
        assert b"Unrecoverable error" not in worker_log.read_bytes()
        ids = webhook_ids(receiver, hook_path)
        assert len(set(ids)) == 10  # every accepted event reached the receiver


def test_liveness_fails_while_the_consumer_is_gone_and_recovers_with_it(
    private_stack: Stack, private_redis: PrivateRedis
):
    """The probe (`docker-entrypoint.sh worker-alive`) follows the consumer, not the process: with Redis
    down the worker process lives on but consumes nothing, so the heartbeat goes stale and the probe fails;
    once the consumer has reconnected the probe passes again."""
    private_stack.env["HERALD_WORKER_HEARTBEAT_INTERVAL_S"] = "0.2"
    worker = private_stack.start_worker(with_sweeper=False)
    beat_file = private_stack.heartbeat_file("worker-1")

    def probe() -> int:
        # max age 2 s = 10 heartbeat intervals
        return subprocess.run(
            ["sh", str(ROOT / "deploy" / "docker-entrypoint.sh"), "worker-alive", "2"],
            env={**os.environ, "TMPDIR": str(beat_file.parent)},
            capture_output=True,
            check=False,
        ).returncode

    wait_until(lambda: probe() == 0, 10, "the probe never passed on a connected worker")
    private_redis.kill()
    wait_until(lambda: probe() != 0, 20, "the probe kept passing with the consumer gone")
    assert worker.poll() is None  # the process alone is not liveness
    private_redis.start()
    wait_until(lambda: probe() == 0, 30, "the probe did not pass again after the consumer reconnected")
