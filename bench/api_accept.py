"""API accept path alone: accepted/s and API-process CPU ms per accepted event (issue 15, target <= 0.8 ms).

    PYTHONPATH=$PWD python -m bench.api_accept [--events 3000] [--concurrency 8] [--rounds 2] [--e2e]

The same system as bench/run.py (uvicorn API, worker, beat, a database and redis-server of its own), driven
like its API-only phase: single POST /v1/events/release for a project without routes. A warm-up round runs
first (connection pools, key cache, imports); each next round prints its figures, so one run gives its own
spread. `--e2e` runs bench/run.py's end-to-end phase instead (a webhook route to an instant receiver, 32
clients, the API sharing the CPU with the worker, PostgreSQL and the receiver) and prints the API's share of it.
With BENCH_PY_SPY_DIR set, the API process is sampled by py-spy in the last round (the thread holding the GIL,
so where its CPU goes; raw collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run import Herald, api_phase, load_phase, receiver_process


def _api_cpu_s(herald: Herald) -> float:
    return herald.cpu_s().get("api", 0.0)


def _py_spy(herald: Herald) -> subprocess.Popen[bytes] | None:
    out_dir = os.environ.get("BENCH_PY_SPY_DIR")
    if not out_dir:
        return None
    pid = herald.apis[0].pid
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--rate", "250",
         "--format", "raw", "--output", str(Path(out_dir) / f"api-{pid}.txt"), "--nonblocking", "--gil"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000, help="events per round")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds after the warm-up")
    parser.add_argument(
        "--e2e", action="store_true", help="the end-to-end phase (instant receiver, 32 clients)"
    )
    args = parser.parse_args(argv)
    if args.e2e:
        _e2e(args.events, args.rounds)
        return
    with tempfile.TemporaryDirectory(prefix="herald-bench-api-") as tmp, Herald(Path(tmp)) as herald:
        asyncio.run(api_phase(herald, min(args.events, 500), args.concurrency))  # warm-up
        for n in range(args.rounds):
            spy = _py_spy(herald) if n == args.rounds - 1 else None
            before = _api_cpu_s(herald)
            figures = asyncio.run(api_phase(herald, args.events, args.concurrency))
            cpu_ms = (_api_cpu_s(herald) - before) * 1000 / args.events
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                spy.wait(30)
            print(
                f"round {n + 1}: {figures['api_only_accept_per_s']:.0f} accepted/s,"
                f" API CPU {cpu_ms:.2f} ms/event, p50 {figures['api_only_p50_ms']:.1f} ms,"
                f" p99 {figures['api_only_p99_ms']:.1f} ms",
                flush=True,
            )


def _e2e(events: int, rounds: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="herald-bench-api-") as tmp,
        receiver_process(0) as receiver_url,
        Herald(Path(tmp)) as herald,
    ):
        asyncio.run(load_phase(herald, receiver_url, min(events, 500), 32))  # warm-up
        for n in range(rounds):
            figures = asyncio.run(load_phase(herald, receiver_url, events, 32))
            print(
                f"e2e round {n + 1}: {figures['accept_per_s']:.0f} accepted/s,"
                f" {figures['delivered_per_s']:.0f} delivered/s, CPU ms/event:"
                f" API {figures['cpu_ms_per_event_api']:.2f}, worker {figures['cpu_ms_per_event_worker']:.2f},"
                f" PostgreSQL {figures['cpu_ms_per_event_postgres']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
