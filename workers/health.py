"""Worker liveness without `celery inspect ping`: the worker's consumer touches a heartbeat file.

`celery inspect ping` in a probe boots a whole Celery app per call (about 3 s of CPU, celery#4079) and goes
through the broker. Instead, a *consumer* bootstep registers a repeating entry on the consumer's timer while the
consumer is connected. On Redis that timer is driven by the main process's event loop (the same loop that
consumes messages and feeds the pool), so the file's modification time is proof of two things: the loop still
turns, and the consumer is up. When the broker connection is lost, Celery stops the consumer's steps (this one
cancels its entries) and restarts them only once it has connected again; a consumer that never comes back (the
celery 5.7 "Unrecoverable error" on a Redis restart, a reconnect that hangs) therefore leaves the file stale, and
the probe fails after `worker.liveness.maxAgeSeconds`. A worker process that is alive but not consuming is
exactly what the probe must catch; a process that is merely running proves nothing.

A broker outage longer than the probe's threshold restarts the worker pods too: harmless (they reconnect when
Redis is back, and PostgreSQL holds all the work), and the threshold is a Helm value.

The probe only compares that time with the clock (`herald-entrypoint worker-alive`, a shell one-liner: no
Python start-up per probe). The file lives in the temporary directory (`$TMPDIR`, else /tmp): an emptyDir in
the Helm chart, a directory of its own per worker in the tests. It is removed when the worker starts, so a file
left by a previous container of the same pod (emptyDir outlives a container restart) cannot make a new, not yet
connected worker look alive; the first touch comes from the running loop, i.e. after the broker connection is
up.

The image's worker command loads this module with `--include workers.health`; nothing else needs it.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from celery import bootsteps

from shared.config import get_settings
from workers.app import app

log = logging.getLogger(__name__)

HEARTBEAT_FILENAME = "herald-worker-heartbeat"


def heartbeat_path() -> Path:
    return Path(tempfile.gettempdir()) / HEARTBEAT_FILENAME


def touch(path: Path) -> None:
    try:
        path.touch()
    except OSError as exc:
        # A full or read-only disk must not crash the consumer loop; the probe will notice the stale file.
        log.warning("could not touch the worker heartbeat %s: %s", path, exc)


def heartbeat_interval_s() -> float:
    # How often the loop touches the file. The probe's threshold (Helm value worker.liveness.maxAgeSeconds,
    # default 60 s) must be several intervals, so one slow loop iteration is not a restart.
    return get_settings().worker_heartbeat_interval_s


class Heartbeat(bootsteps.StartStopStep):
    """Touches the heartbeat file from the consumer's timer while the consumer is connected and consuming."""

    # After the task consumer: start() runs once the broker connection is up and the queues are consumed.
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.path = heartbeat_path()
        self._entries: list[Any] = []
        # Only the first start removes a file left by a previous container; a restart after a broker outage
        # keeps it (it is stale by then, which is what the probe should see until the loop touches it again).
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def start(self, parent: Any) -> None:
        self._cancel()
        timer = parent.timer
        interval_s = heartbeat_interval_s()
        # The first touch as soon as the loop runs, then every interval.
        self._entries = [
            timer.call_after(0.0, touch, (self.path,)),
            timer.call_repeatedly(interval_s, touch, (self.path,)),
        ]
        log.debug("worker heartbeat: %s every %.1f s", self.path, interval_s)

    def stop(self, parent: Any) -> None:
        # Called when the broker connection is lost (the consumer restarts) and on shutdown. Stop touching,
        # but keep the file: a warm shutdown finishing its batch must not fail liveness at once.
        self._cancel()

    def shutdown(self, parent: Any) -> None:
        self._cancel()

    def _cancel(self) -> None:
        for entry in self._entries:
            with contextlib.suppress(Exception):
                entry.cancel()
        self._entries = []


app.steps["consumer"].add(Heartbeat)
