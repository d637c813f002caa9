"""One attempt to several targets (device tokens, topics): which to send to, and what the attempt adds up to.

The worker keeps `progress` (target -> "delivered" or a vendor code) across attempts of a delivery; a provider
sends only to targets not yet delivered and reports per-target outcomes. The rules for the whole attempt:
- any credential failure: AuthFailed (the integration is misconfigured, every target would fail);
- else any retryable failure: that error (the longest Retry-After wins), so the retry resends to the rest only;
- else any other permanent failure: that error, with what did get through recorded;
- else nothing delivered and every remaining target gone: TargetGone;
- else success. Gone targets travel in `removed_targets` either way: the worker drops them from the config.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from providers.base import Receipt
from shared.errors import AuthFailed, DeliveryError, RateLimited, TargetGone, TransportTimeout

DELIVERED = "delivered"


@dataclass(frozen=True)
class TargetResult:
    target: str
    #: "delivered", or a short vendor code stored in the delivery's progress (e.g. "apns_Unregistered")
    outcome: str = DELIVERED
    error: DeliveryError | None = None
    #: the vendor says this target is gone for good (unregistered token): remove it from the integration
    gone: bool = False


async def send_each(
    provider: str,
    targets: Sequence[str],
    send_one: Callable[[str], Awaitable[TargetResult]],
    *,
    budget_s: float,
    concurrency: int,
) -> list[TargetResult]:
    """`send_one` for every target, `concurrency` at a time, all within `budget_s`.

    The worker gives a send its config's timeout_s plus a few seconds before it abandons it (and then records
    an internal error, losing every target's outcome). With many targets and a slow vendor the sends would
    outlast that, so the ones still running when the budget is spent are cancelled and count as timed out:
    retryable, and the retry goes only to them."""
    limit = asyncio.Semaphore(concurrency)

    async def bounded(target: str) -> TargetResult:
        async with limit:
            return await send_one(target)

    tasks = [asyncio.ensure_future(bounded(t)) for t in targets]
    _, late = await asyncio.wait(tasks, timeout=max(budget_s, 0.1))
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    results: list[TargetResult] = []
    for target, task in zip(targets, tasks, strict=True):
        if task in late or task.cancelled():
            error = TransportTimeout(provider, f"not sent within the attempt's {budget_s:.0f} s budget")
            results.append(TargetResult(target, "timeout", error))
        else:
            results.append(task.result())
    return results


def pending(targets: Sequence[str], progress: Mapping[str, str] | None) -> list[str]:
    done = {t for t, outcome in (progress or {}).items() if outcome == DELIVERED}
    return [t for t in dict.fromkeys(targets) if t not in done]


def conclude(provider: str, results: Sequence[TargetResult]) -> Receipt:
    """The Receipt for an attempt whose targets all went through (or were gone), else raise its error."""
    progress = {r.target: r.outcome for r in results}
    removed = tuple(r.target for r in results if r.gone)
    failures = [r.error for r in results if r.error is not None and not r.gone]
    delivered = [r for r in results if r.error is None]
    total = len(results)
    auth = [e for e in failures if isinstance(e, AuthFailed)]
    retryable = [e for e in failures if e.retryable]
    if auth:
        raise _again(auth[0], progress, removed, f"{len(auth)} of {total} target(s)")
    if retryable:
        limited = [e for e in retryable if isinstance(e, RateLimited)]
        worst = max(limited, key=lambda e: e.retry_after_s or 0.0) if limited else retryable[0]
        raise _again(worst, progress, removed, f"{len(retryable)} of {total} target(s)")
    if failures:
        raise _again(failures[0], progress, removed, f"{len(failures)} of {total} target(s)")
    if not delivered and removed:
        gone = next(r.error for r in results if r.gone)
        raise TargetGone(
            provider,
            f"every remaining target is gone ({len(removed)})",
            status_code=gone.status_code if gone else None,
            response_excerpt=gone.response_excerpt if gone else None,
            target_progress=progress,
            removed_targets=removed,
        )
    return Receipt(
        status_code=200 if delivered else None,
        target_progress=progress,
        removed_targets=removed,
    )


def _again(
    err: DeliveryError, progress: dict[str, str], removed: tuple[str, ...], scope: str
) -> DeliveryError:
    """`err` for the whole attempt: same class and vendor answer, with every target's outcome attached."""
    kwargs = {
        "status_code": err.status_code,
        "response_excerpt": err.response_excerpt,
        "target_progress": progress,
        "removed_targets": removed,
    }
    detail = f"{err.detail} [{scope}]"
    if isinstance(err, RateLimited):
        return RateLimited(err.provider, detail, retry_after_s=err.retry_after_s, **kwargs)  # type: ignore[arg-type]
    return type(err)(err.provider, detail, **kwargs)  # type: ignore[arg-type]
