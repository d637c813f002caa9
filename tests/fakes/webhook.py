"""A generic webhook receiver: 200 by default, scripted statuses, Retry-After and slow answers per test."""

from __future__ import annotations

from tests.fakes.server import FakeServer, Recorded, Reply


def webhook_receiver() -> FakeServer:
    return FakeServer(
        default_reply=lambda _req: Reply(200, b'{"received":true}', content_type="application/json")
    )


def retry_after(seconds: int, status: int = 429) -> Reply:
    return Reply(
        status,
        b'{"error":"slow down"}',
        headers={"Retry-After": str(seconds)},
        content_type="application/json",
    )


__all__ = ["FakeServer", "Recorded", "Reply", "retry_after", "webhook_receiver"]
