"""Sending one claimed attempt on the process's event loop, bounded by its deadline; nothing else.

It neither claims nor records: workers/dispatch.py composes claim -> send -> decide -> apply. A send returns a
`SendResult` (a receipt or the error), never raises, and never outlives `attempt_s + SEND_GUARD_S`: a provider
that overruns its deadline is cut off and the attempt becomes `TransportTimeout` (retryable), like any timeout.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from providers.base import Provider, Receipt, max_attempt_s
from shared.config import Settings
from shared.deliveries import Claimed
from shared.errors import TransportTimeout
from shared.rendering import RenderedMessage
from workers.retry import RetryPolicy

# Extra time past an attempt's own deadline before we give up on a send that will not return.
SEND_GUARD_S = 5.0


@dataclass
class Job:
    """One claimed delivery, ready to send (or, with `setup_error`, ready to be recorded as unsendable)."""

    claimed: Claimed
    provider: str
    message: RenderedMessage | None
    config: BaseModel | None
    policy: RetryPolicy
    #: the longest this attempt may take (its deadline is set when the send starts)
    attempt_s: float
    sender: Provider[BaseModel] | None = None
    setup_error: str | None = None  # why the job could not even be attempted
    accepted_at: datetime | None = None  # when the API accepted the event (for accept->delivered latency)
    #: the vendor-side limit this send counts against (workers/pacing.py), when it holds a bulkhead place
    destination: str | None = None
    #: the integration was marked failing when this delivery was claimed: a success clears the mark (a success
    #: of one that was not marked costs no statement)
    integration_failing: bool = False

    @property
    def id(self) -> uuid.UUID:
        return self.claimed.id


@dataclass
class SendResult:
    job: Job
    started_at: datetime
    duration_ms: float
    receipt: Receipt | None = None
    error: BaseException | None = None


def attempt_bound_s(config: BaseModel | None, settings: Settings) -> float:
    """The longest one attempt may take for this config (vendor fallbacks included), as its provider says."""
    if config is None:
        return settings.send_timeout_s
    return float(max_attempt_s(config))


def lease_s(attempt_s: float, settings: Settings) -> float:
    """The sending lease of an attempt: its longest time, the guard, and a margin (`sending_lease_s`) for
    claiming and recording around it."""
    return attempt_s + SEND_GUARD_S + settings.sending_lease_s


async def send_one(job: Job) -> SendResult:
    """Make the attempt; the result carries a receipt or the error, and the attempt's timing."""
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    if job.setup_error is not None or job.message is None or job.config is None or job.sender is None:
        return SendResult(job, started_at, 0.0)
    deadline = time.monotonic() + job.attempt_s
    try:
        async with asyncio.timeout(job.attempt_s + SEND_GUARD_S) as cutoff:
            receipt = await job.sender.send(
                job.message,
                job.config,
                idempotency_key=str(job.claimed.id),
                previous_ref=job.claimed.previous_ref,
                progress=job.claimed.progress,
                deadline=deadline,
            )
        return SendResult(job, started_at, (time.perf_counter() - t0) * 1000, receipt=receipt)
    except TimeoutError as exc:
        error: BaseException = exc
        if cutoff.expired():
            error = TransportTimeout(
                job.provider,
                f"the attempt overran its {job.attempt_s:.0f} s deadline and the {SEND_GUARD_S:.0f} s guard",
            )
        return SendResult(job, started_at, (time.perf_counter() - t0) * 1000, error=error)
    except Exception as exc:
        return SendResult(job, started_at, (time.perf_counter() - t0) * 1000, error=exc)
