"""Scale-out: the end-to-end phase of bench/run.py with 1, 2 and 4 worker processes (and API replicas).

Each configuration `WxA` (W worker processes, A uvicorn API replicas, clients spread over the replicas) gets a
fresh Herald (its own database and redis-server), posts the same number of release events to one webhook at the
receiver, and prints delivered/s, the accept rate, e2e p99, CPU per event of each part and the PostgreSQL
connections the run held, so the next bottleneck shows: a part whose CPU per event grows with the processes, or
the connections, or an accept rate below the delivered rate (the API). Run it as it is on a bigger machine:

    python -m bench.scaleout --configs 1x1,2x1,4x2 --events 3000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

import psycopg

from bench.run import load_phase
from bench.system import PG_ADMIN, Herald, receiver_process


def connections(herald: Herald) -> int:
    """PostgreSQL connections open to this run's database right now."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (herald.db_name,)
        ).fetchone()
    return int(row[0]) if row else 0


def run_config(workers: int, apis: int, receiver_url: str, events: int, concurrency: int) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory(prefix="herald-scaleout-") as tmp,
        Herald(Path(tmp), workers=workers, apis=apis) as herald,
    ):
        figures = asyncio.run(load_phase(herald, receiver_url, events, concurrency))
        figures["pg_connections"] = connections(herald)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="1x1,2x1,4x2", help="WxA: worker processes x API replicas")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent API clients")
    parser.add_argument("--delay-ms", type=float, default=50)
    args = parser.parse_args(argv)
    configs = [tuple(int(n) for n in c.split("x")) for c in args.configs.split(",")]
    rows: list[tuple[int, int, dict[str, float]]] = []
    with receiver_process(args.delay_ms) as receiver_url:
        for workers, apis in configs:
            print(f"--- {workers} worker process(es), {apis} API replica(s) ...", flush=True)
            rows.append(
                (workers, apis, run_config(workers, apis, receiver_url, args.events, args.concurrency))
            )
    print(
        f"\nScale-out, {args.events} events, {args.delay_ms:g} ms receiver (load average {os.getloadavg()[0]:.1f})"
    )
    print(
        f"{'workers':>7} {'apis':>4} {'accept/s':>9} {'delivered/s':>12} {'vs first':>8} {'e2e p99 ms':>10}"
        f" {'api ms':>7} {'worker ms':>9} {'pg ms':>6} {'redis ms':>8} {'pg conns':>8}"
    )
    first = rows[0][2]["delivered_per_s"] if rows else 0.0
    for workers, apis, f in rows:
        print(
            f"{workers:>7} {apis:>4} {f['accept_per_s']:>9.0f} {f['delivered_per_s']:>12.0f}"
            f" {f['delivered_per_s'] / first if first else float('nan'):>8.2f} {f['e2e_p99_ms']:>10.0f}"
            f" {f['cpu_ms_per_event_api']:>7.2f} {f['cpu_ms_per_event_worker']:>9.2f}"
            f" {f['cpu_ms_per_event_postgres']:>6.2f} {f['cpu_ms_per_event_redis']:>8.2f} {f['pg_connections']:>8.0f}"
        )
    print("CPU columns are per event, summed over the processes of that part (ms).")


if __name__ == "__main__":
    main()
