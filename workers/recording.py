"""Group commit of send outcomes: the results that end while a write is under way go out together in the next.

Every batch of sends on the process's loop hands each wave of finished sends here and waits for it to be
written (workers/dispatch.py). One writer thread takes everything queued since its last write, so under load a
transaction carries the outcomes of many waves and batches (one statement set per write, not per wave), and when
idle a result is written at once. A second writer starts only for a large backlog, so a slow write does not hold
the others up for long.

A combined write that fails is retried wave by wave, so one bad wave fails only itself (its rows stay `sending`;
their lease runs out and the sweeper moves them on, as for any write that failed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future

from workers.sending import SendResult

log = logging.getLogger(__name__)

#: writers at once (each holds a database connection while it writes)
MAX_WRITERS = 2
#: queued results that justify a second writer beside a busy one
SECOND_WRITER_BACKLOG = 64

Write = Callable[[list[SendResult]], object]


class Recorder:
    """One per worker process: queues waves of results and writes them in as few transactions as keep up."""

    def __init__(self, executor: Executor, write: Write) -> None:
        self._executor = executor
        self._write = write
        self._queue: list[tuple[list[SendResult], Future[None]]] = []
        self._queued_results = 0
        self._writers = 0
        self._lock = threading.Lock()

    def record(self, results: list[SendResult]) -> Future[None]:
        """Queue a wave; the future resolves once it is written (or with the write's error)."""
        done: Future[None] = Future()
        with self._lock:
            self._queue.append((results, done))
            self._queued_results += len(results)
            start = self._writers == 0 or (
                self._writers < MAX_WRITERS and self._queued_results >= SECOND_WRITER_BACKLOG
            )
            if start:
                self._writers += 1
        if start:
            try:
                self._executor.submit(self._drain)
            except BaseException:
                with self._lock:
                    self._writers -= 1
                raise
        return done

    def _drain(self) -> None:
        waves: list[tuple[list[SendResult], Future[None]]] = []
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        self._writers -= 1
                        return
                    waves, self._queue = self._queue, []
                    self._queued_results = 0
                self._write_waves(waves)
                waves = []
        except BaseException as exc:
            # Never leave a waiter hanging, nor the writer count taken (the next record starts a writer).
            for _, done in waves:
                _resolve(done, exc)
            with self._lock:
                self._writers -= 1
            raise

    def _write_waves(self, waves: list[tuple[list[SendResult], Future[None]]]) -> None:
        try:
            self._write([r for results, _ in waves for r in results])
        except Exception as exc:
            if len(waves) == 1:
                _resolve(waves[0][1], exc)
                return
            log.warning(
                "a combined write of %d waves failed; writing them one by one", len(waves), exc_info=True
            )
            for results, done in waves:
                try:
                    self._write(results)
                except Exception as wave_exc:
                    _resolve(done, wave_exc)
                else:
                    _resolve(done, None)
            return
        for _, done in waves:
            _resolve(done, None)


def _resolve(done: Future[None], exc: BaseException | None) -> None:
    # A waiter cancelled (its loop going away) has cancelled its future: nobody is left to tell.
    if done.done() or (not done.running() and not done.set_running_or_notify_cancel()):
        return
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)
