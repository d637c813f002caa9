"""Nothing lost: killed workers, a flushed Redis and an unreachable Redis, each on a Herald of its own."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.fakes.server import FakeServer, Reply
from tests.integration.stack import Stack, create_webhook, post_release, wait_for_deliveries, wait_until

pytestmark = pytest.mark.integration


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


def test_redis_flushall_after_202_still_delivers(own_stack: Stack, receiver: FakeServer, hook_path, project):
    own_stack.start_beat()
    with own_stack.client() as api:
        create_webhook(api, receiver.url(hook_path), project=project)
        event_id = post_release(api, project)  # fanout is published, but no worker is running yet
        queue = own_stack.env["HERALD_QUEUE_NAME"]
        wait_until(lambda: own_stack.redis.llen(queue) >= 1, 5, "fanout was never published")
        own_stack.redis.flushall()
        own_stack.start_worker()
        [delivery] = wait_for_deliveries(api, event_id, timeout_s=30)
        assert delivery["state"] == "delivered"
        assert len(receiver.requests(hook_path)) == 1


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


def test_sweeper_recovers_a_batch_whose_message_was_lost(own_stack: Stack, receiver: FakeServer, project):
    """Many deliveries in flight when Redis is flushed: every one still arrives exactly once."""
    paths = [f"/many/{project}/{i}" for i in range(20)]
    own_stack.start_beat()
    with own_stack.client() as api:
        for path in paths:
            create_webhook(api, receiver.url(path), project=project)
        event_id = post_release(api, project)
        own_stack.start_worker()
        wait_until(lambda: any(receiver.requests(p) for p in paths), 20, "nothing delivered")
        own_stack.kill_worker(signal.SIGKILL)
        own_stack.redis.flushall()
        own_stack.start_worker()
        deliveries = wait_for_deliveries(api, event_id, count=20, timeout_s=40)
        assert {d["state"] for d in deliveries} == {"delivered"}
        assert all(len(receiver.requests(p)) >= 1 for p in paths)
