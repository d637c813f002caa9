"""providers/_pool.py: per-destination and total bounds, idle eviction, waits bounded by the deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from providers._pool import ConnectionPool, PoolTimeout


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False


def pool(**kwargs: float) -> tuple[ConnectionPool[Conn], list[Conn]]:
    closed: list[Conn] = []

    def close(conn: Conn) -> None:
        conn.closed = True
        closed.append(conn)

    settings = {"per_key": 2, "total": 3, "idle_s": 60.0, **kwargs}
    return ConnectionPool(
        per_key=int(settings["per_key"]), total=int(settings["total"]), idle_s=settings["idle_s"], close=close
    ), closed


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_reuses_a_released_connection():
    async def run() -> None:
        p, closed = pool()
        lease = await p.acquire("relay", soon())
        assert lease.conn is None  # a slot: the caller opens the connection
        conn = Conn("a")
        p.release(lease, conn, reusable=True)
        again = await p.acquire("relay", soon())
        assert again.conn is conn and closed == []
        p.release(again, conn, reusable=False)  # a failed send: closed, slot freed
        assert closed == [conn] and p.open_connections == 0

    asyncio.run(run())


def test_per_destination_bound_and_the_deadline():
    async def run() -> None:
        p, _ = pool()
        first = await p.acquire("relay", soon())
        second = await p.acquire("relay", soon())
        with pytest.raises(PoolTimeout):
            await p.acquire("relay", soon(0.05))  # both busy: waits, then gives up at its deadline
        other = await p.acquire("other", soon())  # another destination is not held up
        assert other.conn is None
        waiting = asyncio.ensure_future(p.acquire("relay", soon()))
        await asyncio.sleep(0)
        conn = Conn("a")
        p.release(first, conn, reusable=True)
        assert (await waiting).conn is conn  # the waiter got the released connection
        for lease in (second, other):
            p.release(lease, None, reusable=False)

    asyncio.run(run())


def test_total_bound_closes_an_idle_connection_of_another_destination():
    async def run() -> None:
        p, closed = pool(per_key=3, total=2)
        a = await p.acquire("a", soon())
        b = await p.acquire("b", soon())
        conn_a = Conn("a")
        p.release(a, conn_a, reusable=True)
        c = await p.acquire("c", soon())  # at the total: a's idle connection makes room
        assert c.conn is None and closed == [conn_a] and p.open_connections == 2
        p.release(b, None, reusable=False)
        p.release(c, None, reusable=False)

    asyncio.run(run())


def test_idle_connections_are_evicted():
    async def run() -> None:
        p, closed = pool(idle_s=0.0)
        lease = await p.acquire("relay", soon())
        conn = Conn("a")
        p.release(lease, conn, reusable=True)
        deadline = time.monotonic() + 1
        while time.monotonic() == lease_time(p):  # let the clock move past the release instant
            assert time.monotonic() < deadline
        fresh = await p.acquire("relay", soon())
        assert fresh.conn is None and closed == [conn] and conn.closed
        p.release(fresh, None, reusable=False)
        assert p.open_connections == 0

    asyncio.run(run())


def lease_time(p: ConnectionPool[Conn]) -> float:
    return max((since for idle in p._idle.values() for _, since in idle), default=0.0)


def test_close_all_closes_idle_connections():
    async def run() -> None:
        p, closed = pool()
        lease = await p.acquire("relay", soon())
        conn = Conn("a")
        p.release(lease, conn, reusable=True)
        p.close_all()
        assert closed == [conn] and p.open_connections == 0

    asyncio.run(run())
