"""The short fault run (`python -m bench.faults --short`) as part of `make test`: Redis flushed and Redis
SIGKILLed and restarted empty while events flow, on a PostgreSQL and a Redis of the script's own. Nothing
accepted may be lost; the script exits 1 when something is, and prints the table either way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.stack import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_short_fault_run_loses_nothing():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--short"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| Redis")]
    assert len(rows) == 2, output
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        accepted, delivered, lost = int(cells[1]), int(cells[2]), int(cells[4])
        assert accepted == 20 and lost == 0 and delivered == accepted, row
