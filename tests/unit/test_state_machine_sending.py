"""An attempt that overruns its deadline and guard is a retryable `TransportTimeout`, decided like any timeout.

Repro (before): workers/sending.py wrapped the send in `asyncio.wait_for(timeout_s + 5 s)`; a provider that
outran it (Slack's edit -> post fallback, two requests of up to timeout_s each) raised the bare TimeoutError,
which is not a DeliveryError, so the delivery went dead `internal_error` with a traceback, never retried.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel

from providers.base import Provider, Receipt
from shared.deliveries import Claimed, DeliveryState
from shared.rendering import RenderedMessage
from workers import sending
from workers.outcomes import decide
from workers.retry import RetryPolicy


class HangConfig(BaseModel):
    timeout_s: float = 0.2


class HangingProvider(Provider[HangConfig]):
    """A provider fake that ignores its deadline: it answers after an hour."""

    name: ClassVar[str] = "hanging"
    config_model: ClassVar[type[BaseModel]] = HangConfig

    async def send(
        self,
        message: RenderedMessage,
        config: HangConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    def preview(self, message: RenderedMessage, config: HangConfig) -> dict[str, Any]:
        return {}


def test_an_attempt_past_its_deadline_and_guard_is_a_retryable_timeout():
    # Runs for the attempt's 0.2 s plus the real guard (SEND_GUARD_S).
    claimed = Claimed(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), 1, None, None, None)
    config = HangConfig()
    job = sending.Job(
        claimed,
        "hanging",
        RenderedMessage(kind="release", event_type="release.created", title="t", text="x", severity="info"),
        config,
        RetryPolicy(),
        attempt_s=config.timeout_s,
        sender=HangingProvider(http=None),  # type: ignore[arg-type]
    )
    result = asyncio.run(sending.send_one(job))
    outcome = decide(result)
    assert outcome.state == DeliveryState.RETRYING
    assert outcome.error_class == "timeout"
    assert outcome.error_detail is not None and "overran" in outcome.error_detail
    assert result.started_at <= datetime.now(UTC)
