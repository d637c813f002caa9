"""Worker liveness without `celery inspect ping`: the worker's own event loop touches a heartbeat file.

`celery inspect ping` in a probe boots a whole Celery app per call (about 3 s of CPU, celery#4079) and goes
through the broker, so a Redis blip fails every worker's probe at once. Instead, a worker bootstep registers a
repeating entry on the worker's timer. On Redis that timer is driven by the main
process's event loop (the same loop that consumes messages and feeds the pool), so the file's modification
time is proof that the loop still turns. The probe only compares that time with the clock
(`herald-entrypoint worker-alive`, a shell one-liner: no Python start-up per probe).

The file lives in the temporary directory (`$TMPDIR`, else /tmp): an emptyDir in the Helm chart. It is
removed when the step starts, so a file left by a previous container of the same pod (emptyDir outlives a
container restart) cannot make a new, not yet connected worker look alive; the first touch comes from the
running loop, i.e. after the broker connection is up.

The image's worker command loads this module with `--include workers.health`; nothing else needs it.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from celery import bootsteps

from workers.app import app

log = logging.getLogger(__name__)

HEARTBEAT_FILENAME = "herald-worker-heartbeat"
# How often the loop touches the file. The probe's threshold (Helm value worker.liveness.maxAgeSeconds,
# default 60 s) must be several intervals, so one slow loop iteration is not a restart.
HEARTBEAT_INTERVAL_S = 10.0


def heartbeat_path() -> Path:
    return Path(tempfile.gettempdir()) / HEARTBEAT_FILENAME


def touch(path: Path) -> None:
    try:
        path.touch()
    except OSError as exc:
        # A full or read-only disk must not crash the consumer loop; the probe will notice the stale file.
        log.warning("could not touch the worker heartbeat %s: %s", path, exc)


class Heartbeat(bootsteps.StartStopStep):
    """Touches the heartbeat file from the worker's timer (the main event loop under prefork + Redis)."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path = heartbeat_path()
        self._entries: list[Any] = []

    def start(self, parent: Any) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        timer = parent.timer
        # The first touch as soon as the loop runs, then every interval.
        self._entries = [
            timer.call_after(0.0, touch, (self.path,)),
            timer.call_repeatedly(HEARTBEAT_INTERVAL_S, touch, (self.path,)),
        ]
        log.info("worker heartbeat: %s every %.0f s", self.path, HEARTBEAT_INTERVAL_S)

    def stop(self, parent: Any) -> None:
        # Stop touching, but keep the file: a warm shutdown finishing its batch must not fail liveness.
        for entry in self._entries:
            with contextlib.suppress(Exception):
                entry.cancel()
        self._entries = []


app.steps["worker"].add(Heartbeat)
