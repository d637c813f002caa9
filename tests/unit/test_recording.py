"""Group commit of outcomes (workers/recording.py): waves that end during a write share the next one, and a
combined write that fails is retried wave by wave so one bad wave fails only itself."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from workers.recording import Recorder
from workers.sending import SendResult


def wave(*names: str) -> list[SendResult]:
    # The recorder never looks inside a result: stand-ins keep the test about batching.
    return cast(list[SendResult], list(names))


def test_waves_that_end_during_a_write_go_out_together_in_the_next():
    writes: list[list[Any]] = []
    first_started, release_first = threading.Event(), threading.Event()

    def write(results: list[SendResult]) -> None:
        writes.append(list(results))
        if len(writes) == 1:
            first_started.set()
            release_first.wait(10)

    with ThreadPoolExecutor(4) as pool:
        recorder = Recorder(pool, write)
        first = recorder.record(wave("a"))
        assert first_started.wait(10)
        later = [recorder.record(wave(name)) for name in ("b", "c", "d")]
        release_first.set()
        for done in [first, *later]:
            done.result(10)
    assert writes == [["a"], ["b", "c", "d"]]


def test_a_failed_combined_write_is_retried_per_wave_and_fails_only_the_bad_one():
    writes: list[list[Any]] = []
    gate = threading.Event()

    def write(results: list[SendResult]) -> None:
        writes.append(list(results))
        if results == wave("block"):
            gate.wait(10)
        if "bad" in cast(list[Any], results):
            raise RuntimeError("a bad row")

    with ThreadPoolExecutor(4) as pool:
        recorder = Recorder(pool, write)
        blocker = recorder.record(wave("block"))
        good, bad, other = (recorder.record(wave(n)) for n in ("good", "bad", "other"))
        gate.set()
        blocker.result(10)
        good.result(10)
        other.result(10)
        with pytest.raises(RuntimeError, match="a bad row"):
            bad.result(10)
    assert writes == [["block"], ["good", "bad", "other"], ["good"], ["bad"], ["other"]]
