"""Deliveries held for their rate slot on the process's loop (workers/wakeups.py): woken at (never before) their
slot, a burst grouped into few timers, and handed back whole on shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from workers.wakeups import BUCKET_S, Wakeups


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_each_delivery_wakes_at_or_after_its_slot_in_slot_order(loop: asyncio.AbstractEventLoop) -> None:
    woken: list[tuple[float, list[uuid.UUID]]] = []
    done = threading.Event()
    ids = [uuid.uuid4() for _ in range(3)]

    def wake(batch: list[uuid.UUID]) -> None:
        woken.append((time.monotonic(), batch))
        if sum(len(b) for _, b in woken) == len(ids):
            done.set()

    wakeups = Wakeups(loop, wake)
    start = time.monotonic()
    waits = {ids[0]: 0.3, ids[1]: 0.1, ids[2]: 0.2}
    wakeups.hold(waits)
    assert done.wait(5)
    order = [i for _, batch in woken for i in batch]
    assert order == [ids[1], ids[2], ids[0]]
    for at, batch in woken:
        for delivery_id in batch:
            assert at - start >= waits[delivery_id] - 0.001  # never before its slot
    assert wakeups.held_count == 0


def test_a_burst_within_one_bucket_is_one_wake(loop: asyncio.AbstractEventLoop) -> None:
    batches: list[list[uuid.UUID]] = []
    done = threading.Event()

    def wake(batch: list[uuid.UUID]) -> None:
        batches.append(batch)
        done.set()

    wakeups = Wakeups(loop, wake)
    # All in one bucket: the same slot time for 100 deliveries.
    slot_s = (int(time.monotonic() / BUCKET_S) + 4) * BUCKET_S + BUCKET_S / 2 - time.monotonic()
    ids = [uuid.uuid4() for _ in range(100)]
    wakeups.hold(dict.fromkeys(ids, slot_s))
    assert done.wait(5)
    assert batches == [ids]


def test_drain_hands_back_every_held_delivery_and_nothing_fires_after(
    loop: asyncio.AbstractEventLoop,
) -> None:
    fired: list[uuid.UUID] = []
    wakeups = Wakeups(loop, fired.extend)
    ids = [uuid.uuid4() for _ in range(5)]
    wakeups.hold({i: 0.2 + n * 0.1 for n, i in enumerate(ids)})
    assert wakeups.held_count == 5
    assert sorted(wakeups.drain()) == sorted(ids)
    time.sleep(0.8)
    assert fired == []
