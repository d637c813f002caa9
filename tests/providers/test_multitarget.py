"""providers/_multitarget.py: the per-attempt budget and how per-target outcomes add up."""

from __future__ import annotations

import asyncio

import pytest

from providers._multitarget import TargetResult, conclude, pending, send_each
from shared.errors import AuthFailed, ProviderUnavailable, RateLimited, TargetGone, TransportTimeout


def test_targets_still_running_when_the_budget_is_spent_time_out_and_the_rest_count():
    async def send_one(target: str) -> TargetResult:
        await asyncio.sleep(30 if target == "slow" else 0.01)
        return TargetResult(target)

    results = asyncio.run(send_each("apns", ["a", "slow", "b"], send_one, budget_s=0.5, concurrency=2))
    assert [r.outcome for r in results] == ["delivered", "timeout", "delivered"]
    with pytest.raises(TransportTimeout) as info:
        conclude("apns", results)
    assert info.value.target_progress == {"a": "delivered", "slow": "timeout", "b": "delivered"}


def test_outcomes_add_up():
    gone = TargetResult("g", "apns_Unregistered", TargetGone("apns", "gone", status_code=410), gone=True)
    ok = TargetResult("ok")
    receipt = conclude("apns", [ok, gone])
    assert receipt.removed_targets == ("g",) and receipt.target_progress == {
        "ok": "delivered",
        "g": "apns_Unregistered",
    }
    with pytest.raises(TargetGone):
        conclude("apns", [gone])
    slow = TargetResult("s", "x", RateLimited("apns", "slow", retry_after_s=9))
    fast = TargetResult("f", "x", RateLimited("apns", "slow", retry_after_s=2))
    down = TargetResult("d", "x", ProviderUnavailable("apns", "down"))
    with pytest.raises(RateLimited) as info:
        conclude("apns", [fast, down, slow, ok])
    assert info.value.retry_after_s == 9
    with pytest.raises(AuthFailed):
        conclude("apns", [slow, TargetResult("a", "x", AuthFailed("apns", "key"))])
    assert pending(["a", "b", "a"], {"a": "delivered", "b": "apns_500"}) == ["b"]
