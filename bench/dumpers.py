"""Micro-benchmark behind shared/db/adapters.py and models.StringArray: the per-row Python work of one fan-out
to `--rows` integrations, psycopg's and SQLAlchemy's defaults side by side with Herald's, in one run.

- a `uuid[]` parameter of `--rows` ids (fan-out's INSERT passes three, the claim and each outcome write more):
  psycopg's text list dumper (the baseline) against the binary one Herald's connections use;
- reading `--rows` routes' five varchar[] columns: SQLAlchemy's ARRAY result processing (the baseline, a copy
  of every list) against StringArray (none: psycopg's lists as they come).

No server is needed: the dumpers run against an unconnected transformer, which is what psycopg does before it
sends the statement. Best and median of `--repeat` runs, in milliseconds.

    python -m bench.dumpers --rows 1000
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.adapt import PyFormat, Transformer
from sqlalchemy import String
from sqlalchemy.dialects import postgresql

from shared.db.adapters import UuidListDumper
from shared.db.models import StringArray


def timed_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # warm-up: the transformer caches its dumpers
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return min(runs), statistics.median(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)

    ids = [uuid.uuid4() for _ in range(args.rows)]
    default_tx = Transformer(psycopg.adapters)
    ours_map = psycopg.adapt.AdaptersMap(psycopg.adapters)
    ours_map.register_dumper(list, UuidListDumper)
    ours_tx = Transformer(ours_map)

    dialect = postgresql.psycopg.dialect()  # type: ignore[attr-defined]
    plain = postgresql.ARRAY(String(100)).result_processor(dialect, None)
    ours = StringArray(String(100)).result_processor(dialect, None)
    lists = [["prod", "staging"]] * (5 * args.rows)

    cases = [
        (
            f"uuid[] of {args.rows} ids, dumped",
            lambda: default_tx.get_dumper(ids, PyFormat.AUTO).dump(ids),
            lambda: ours_tx.get_dumper(ids, PyFormat.AUTO).dump(ids),
        ),
        (
            f"{args.rows} routes' 5 varchar[] columns, read",
            lambda: [plain(v) for v in lists],
            lambda: [v if ours is None else ours(v) for v in lists],
        ),
    ]
    print(f"{'':44s} {'baseline best/median ms':>24s} {'Herald best/median ms':>22s}  ratio")
    for label, baseline, herald in cases:
        b_best, b_med = timed_ms(baseline, args.repeat)
        h_best, h_med = timed_ms(herald, args.repeat)
        print(
            f"{label:44s} {b_best:11.3f} / {b_med:8.3f} {h_best:10.3f} / {h_med:8.3f}  {b_med / h_med:5.1f}x"
        )


if __name__ == "__main__":
    main()
