"""Baseline: a bare Celery task per message doing one sync ``httpx.post`` (``-P threads -c 50``, no database).

This is the design Herald's batched asyncio delivery has to beat (see
/work/shared/reference/throughput-baselines.md): one Celery message per delivery, each sent by a
worker thread with a blocking HTTP client. No database, no result backend, nothing but Celery's own
per-message cost plus the POST, so it is an upper bound for task-per-delivery.

- Worker side: this module is also the Celery app, ``celery -A bench.baseline_celery worker ...``.
- Driver side: ``run_baseline(receiver_url, messages)`` flushes Redis db 14, starts a real worker
  subprocess, enqueues the messages, waits until the receiver has answered them all and returns
  the figures.
- ``python -m bench.baseline_celery --messages 2000 --delay-ms 0`` runs it against its own
  ``ReceiverThread``.

Redis database 14 is reserved for benchmarks: it is flushed before and after every run. `bench/run.py` passes
a redis-server of its own instead (``broker_url``), so runs side by side do not flush each other's queue.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis
from celery import Celery

from bench.receiver import ReceiverThread, sample_body

# The worker subprocess is given the driver's broker in BENCH_BROKER_URL.
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")
QUEUE = "bench_baseline"
REPO_ROOT = Path(__file__).resolve().parents[1]

WORKER_READY_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 10.0
# After "ready" the consumer is registered; a short pause lets the threads pool settle so the first
# enqueued messages do not pay for worker start-up.
WORKER_SETTLE_S = 1.0
POLL_INTERVAL_S = 0.02

app = Celery("bench_baseline", broker=BROKER_URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    task_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    # Prefetch is multiplier x concurrency: with 50 threads, 4 keeps 200 messages on hand so no thread
    # waits on a broker round trip, while a crash loses (re-delivers) at most that many.
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

# One client for all worker threads: a per-task client would open a new connection per POST.
# httpx.Client is thread safe. Its pool must hold at least one keep-alive connection per thread,
# or connections beyond the default 20 are closed after each request and re-opened.
# trust_env=False: benchmarks target loopback only; a proxy from the environment must not interfere.
_HTTP_POOL_SIZE = 256
_http = httpx.Client(
    timeout=10,
    trust_env=False,
    limits=httpx.Limits(max_connections=_HTTP_POOL_SIZE, max_keepalive_connections=_HTTP_POOL_SIZE),
)


@app.task(name="bench.post", ignore_result=True)
def post(url: str, body: dict[str, Any]) -> None:
    """Deliver one message: one blocking POST, as a task-per-delivery design would."""
    response = _http.post(url, json=body, timeout=10)
    response.raise_for_status()  # a failure shows in the worker log instead of vanishing


def _flush_bench_db() -> None:
    client = redis.Redis.from_url(app.conf.broker_url)
    try:
        client.flushdb()
    finally:
        client.close()


def _start_worker(concurrency: int, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "celery", "-A", "bench.baseline_celery", "worker",
        "-P", "threads", "-c", str(concurrency),
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-Q", QUEUE, "-n", f"bench_baseline.{os.getpid()}@%h", "--loglevel", "INFO",
    ]  # fmt: skip
    # Output goes to a file, not a pipe: nobody reads a pipe during the run, and a full one would
    # block the worker. start_new_session keeps a Ctrl-C in the terminal from reaching it twice.
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=dict(os.environ, BENCH_BROKER_URL=app.conf.broker_url),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_worker_ready(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"celery worker exited ({worker.returncode}):\n{log_path.read_text()[-2000:]}")
        if " ready." in log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(
        f"celery worker not ready after {WORKER_READY_TIMEOUT_S} s:\n{log_path.read_text()[-2000:]}"
    )


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)  # warm shutdown: finish running tasks
    try:
        worker.wait(WORKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(WORKER_STOP_TIMEOUT_S)


def run_baseline(
    receiver_url: str,
    messages: int,
    concurrency: int = 50,
    *,
    receiver: ReceiverThread | None = None,
    timeout_s: float = 120.0,
    body_size_bytes: int = 1024,
    broker_url: str | None = None,
) -> dict[str, Any]:
    """Measure task-per-message throughput against the receiver at ``receiver_url``.

    The receiver's record is reset first. Pass ``receiver`` (the ``ReceiverThread`` serving
    ``receiver_url``) to poll its count directly instead of over ``GET /_stats``.

    The clock runs from the first enqueue until the receiver has answered ``messages`` POSTs, or
    until ``timeout_s``. Returns ``{"messages", "delivered", "duration_s", "posts_per_s",
    "enqueue_s", "timed_out", "concurrency"}``; ``posts_per_s`` is delivered / duration_s.
    """
    if broker_url is not None:
        app.conf.update(broker_url=broker_url)
    parts = urlsplit(receiver_url)
    stats_base = f"{parts.scheme}://{parts.netloc}"
    poll_client = httpx.Client(timeout=10, trust_env=False)

    def delivered_count() -> int:
        if receiver is not None:
            return receiver.count
        return int(poll_client.get(f"{stats_base}/_stats").json()["count"])

    if receiver is not None:
        receiver.reset()
    else:
        poll_client.post(f"{stats_base}/_reset").raise_for_status()

    # Bodies are built before the clock starts: their cost is not Celery's.
    bodies = [sample_body(f"baseline-{i}", body_size_bytes) for i in range(messages)]
    _flush_bench_db()
    log_fd, log_name = tempfile.mkstemp(prefix="bench_baseline_worker_", suffix=".log")
    os.close(log_fd)  # the worker writes it; we only read it
    log_path = Path(log_name)
    worker = _start_worker(concurrency, log_path)
    try:
        _wait_worker_ready(worker, log_path)
        time.sleep(WORKER_SETTLE_S)

        start_s = time.perf_counter()
        # One producer (one broker connection) for the whole burst rather than a pool checkout per call, on a
        # connection of this run's own: the app's producer pool keeps the broker of its first run, which a second
        # run (bench/run.py: one redis-server per run) finds gone.
        with (
            app.connection_for_write(app.conf.broker_url) as connection,
            app.amqp.Producer(connection) as producer,
        ):
            for body in bodies:
                post.apply_async((receiver_url, body), queue=QUEUE, producer=producer)
        enqueue_s = time.perf_counter() - start_s

        deadline_s = start_s + timeout_s
        delivered = delivered_count()
        while delivered < messages and time.perf_counter() < deadline_s:
            if worker.poll() is not None:
                break  # the worker died: report what arrived rather than wait for the timeout
            time.sleep(POLL_INTERVAL_S)
            delivered = delivered_count()
        duration_s = time.perf_counter() - start_s
    finally:
        _stop_worker(worker)
        poll_client.close()
        _flush_bench_db()  # drop anything left queued by a timed-out run

    if worker.returncode not in (0, None) and delivered < messages:
        print(f"worker log (exit {worker.returncode}):\n{log_path.read_text()[-2000:]}", file=sys.stderr)
    log_path.unlink(missing_ok=True)
    return {
        "messages": messages,
        "delivered": delivered,
        "duration_s": round(duration_s, 3),
        "posts_per_s": round(delivered / duration_s, 1) if duration_s > 0 else 0.0,
        "enqueue_s": round(enqueue_s, 3),
        "timed_out": delivered < messages,
        "concurrency": concurrency,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Celery task-per-message baseline (-P threads, sync httpx)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="receiver delay before answering")
    parser.add_argument("--concurrency", type=int, default=50, help="celery -c (worker threads)")
    parser.add_argument("--timeout-s", type=float, default=120.0)
    args = parser.parse_args(argv)

    with ReceiverThread(delay_ms=args.delay_ms) as receiver:
        result = run_baseline(
            receiver.url, args.messages, args.concurrency, receiver=receiver, timeout_s=args.timeout_s
        )
    print(
        f"celery -P threads -c {result['concurrency']}, receiver delay {args.delay_ms:g} ms: "
        f"{result['delivered']}/{result['messages']} posts in {result['duration_s']:.2f} s "
        f"= {result['posts_per_s']:.0f} posts/s (enqueue {result['enqueue_s']:.2f} s)"
        + ("  TIMED OUT" if result["timed_out"] else "")
    )


if __name__ == "__main__":
    main()
