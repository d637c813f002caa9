"""The limiter's Lua script against a real Redis (its own database, FLUSHDB only), and destination keys.

Times are asserted as slot arithmetic (waits relative to each other), never as elapsed wall time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from prometheus_client import REGISTRY
from pydantic import SecretStr

from providers.destinations import Rate, default_rate, destination_key
from providers.discord import DiscordConfig
from providers.pagerduty import PagerDutyConfig
from providers.webhook import WebhookConfig
from shared.config import Settings
from tests.integration.conftest import claimed_redis_db
from workers.pacing import Ask, Pacer


@pytest.fixture
def pacer() -> Iterator[Pacer]:
    with claimed_redis_db() as db:  # a test database no other session holds
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        client.flushdb()
        settings = Settings(redis_url=f"redis://127.0.0.1:6379/{db}", pacing_slot_grace_s=30)
        yield Pacer(settings)
        client.flushdb()
        client.close()


def never_room(n: int) -> bool:
    """The process has no room for more sends."""
    return False


def always_room(n: int) -> bool:
    """The process has room."""
    return True


def asks(n: int, destination: str = "discord:abc", rate: Rate | None = Rate(2.0, 1)) -> list[Ask]:
    return [Ask(uuid.uuid4(), "discord", destination, rate) for _ in range(n)]


def test_a_burst_gets_one_slot_each_in_order_at_the_rate(pacer: Pacer):
    burst = asks(5)
    waits = pacer.waits(burst)
    assert burst[0].delivery_id not in waits  # the first goes now
    slots = [waits[a.delivery_id][0] for a in burst[1:]]
    assert slots == sorted(slots)
    # 2/s: each slot half a second after the one before (a few ms of Redis clock between the calls).
    for earlier, later in zip([0.0, *slots], slots, strict=False):
        assert later - earlier == pytest.approx(0.5, abs=0.05)


def test_a_delivery_that_comes_back_uses_its_ticket_and_takes_no_second_slot(pacer: Pacer):
    first, second = asks(2)
    waits = pacer.waits([first, second])
    assert second.delivery_id in waits
    # Back early (before its slot): it waits for the same slot, and no new slot is taken.
    again = pacer.waits([second])
    assert again[second.delivery_id][0] <= waits[second.delivery_id][0]
    [third] = asks(1)
    third_wait = pacer.waits([third])[third.delivery_id][0]
    assert third_wait == pytest.approx(1.0, abs=0.05)  # after the second's slot, not after a third one


def test_a_burst_allowance_lets_that_many_go_at_once(pacer: Pacer):
    burst = asks(4, rate=Rate(1.0, 3))
    waits = pacer.waits(burst)
    assert set(waits) == {burst[3].delivery_id}


def test_a_pause_holds_the_destination_for_every_caller_and_slots_start_after_it(pacer: Pacer):
    pacer.pause("discord:abc", "discord", 3.0, None)
    [a, b] = asks(2)
    waits = pacer.waits([a, b])
    assert waits[a.delivery_id] == (pytest.approx(3.0, abs=0.05), "rate")
    # Another destination is not paused.
    [other] = asks(1, destination="discord:other")
    assert pacer.waits([other]) == {}


def test_unpaced_destinations_and_pacing_off_never_wait(pacer: Pacer):
    assert pacer.waits(asks(10, rate=None)) == {}
    off = Pacer(pacer.settings.model_copy(update={"pacing_enabled": False}))
    assert off.waits(asks(10)) == {}


def test_without_redis_the_limit_falls_back_to_a_share_of_the_rate_per_process():
    """Redis unreachable: nothing raises, and this process paces at `pacing_fail_open_ratio` of the rate."""
    settings = Settings(redis_url="redis://127.0.0.1:1/0", pacing_fail_open_ratio=0.5)
    burst = asks(3, rate=Rate(2.0, 1))
    waits = Pacer(settings).waits(burst)
    assert burst[0].delivery_id not in waits
    assert waits[burst[1].delivery_id][0] == pytest.approx(1.0, abs=0.05)  # 2/s x 0.5 = one a second


def test_the_bulkhead_caps_places_per_destination_and_gives_them_back(pacer: Pacer):
    cap = pacer.settings.bulkhead_sends_per_destination
    entered, over = pacer.enter(asks(cap + 2))
    assert (len(entered), len(over)) == (cap, 2)
    assert pacer.enter(asks(1, destination="other"))[1] == []
    pacer.leave([entered[0].destination])
    assert len(pacer.enter(asks(2))[0]) == 1


def test_deliveries_over_the_bulkhead_are_parked_and_get_freed_places_oldest_first(pacer: Pacer):
    """Over the cap, up to `bulkhead_parked_per_destination` wait in the process (no row written) and take
    each freed place in order; the rest, and those parked too long, are for `waiting`."""
    settings = pacer.settings.model_copy(
        update={
            "bulkhead_sends_per_destination": 2,
            "bulkhead_parked_per_destination": 3,
            "bulkhead_backlog_per_destination": 0,
        }
    )
    pacer = Pacer(settings)
    entered, over = pacer.enter(asks(7, rate=None))
    park, queued, rest = pacer.parkable(over)
    assert (len(entered), len(park), len(queued), len(rest)) == (2, 3, 0, 2)
    pacer.park(park)
    assert pacer.unpark([park[0].destination], never_room) == []  # no free place yet
    pacer.leave([entered[0].destination])
    # A parked delivery holds its room among the process's sends already: no room is asked for it.
    assert pacer.unpark([park[0].destination], never_room) == [park[0].delivery_id]
    # The freed place is kept for the unparked delivery: a newer arrival does not take it first.
    newcomer = asks(1, rate=None)
    assert pacer.enter(newcomer) == ([], newcomer)
    assert pacer.enter([park[0]]) == ([park[0]], [])
    pacer.unreserve([park[0].delivery_id])  # entered: nothing left to give back
    assert pacer.enter(newcomer) == ([], newcomer)
    assert pacer.parkable(asks(2, rate=None))[0] != []  # a parking place is free again
    assert pacer.expire(max_age_s=60) == []
    assert [a.delivery_id for a in pacer.expire(max_age_s=0)] == [a.delivery_id for a in park[1:]]
    assert pacer.parked_count == 0


def test_a_destination_that_answers_fast_earns_places_and_a_slow_one_loses_them(pacer: Pacer):
    settings = pacer.settings.model_copy(
        update={"bulkhead_sends_per_destination": 2, "bulkhead_max_sends_per_destination": 4}
    )
    pacer = Pacer(settings)
    fast, hanging = "webhook:fast", "webhook:hanging"
    assert len(pacer.enter(asks(9, destination=fast, rate=None))[0]) == 2
    pacer.observe([(fast, 0.05)] * 5 + [(hanging, 9.0)] * 5)
    assert len(pacer.enter(asks(9, destination=fast, rate=None))[0]) == 2  # 4 now, 2 of them taken
    assert len(pacer.enter(asks(9, destination=hanging, rate=None))[0]) == 2  # never more than the base
    pacer.observe([(fast, 12.0)])  # it slowed down: back to the base
    pacer.leave([fast] * 4)
    assert len(pacer.enter(asks(9, destination=fast, rate=None))[0]) == 2


def test_destination_keys_name_the_vendor_limit_and_hold_no_secret():
    token = "tok3n-s3cr3t-value"
    hook = DiscordConfig(
        webhook_url=SecretStr(f"https://discord.com/api/webhooks/1200000000000000123/{token}")
    )
    same_hook_other_thread = DiscordConfig(
        webhook_url=SecretStr(
            f"https://discord.com/api/webhooks/1200000000000000123/{token}?thread_id=1300000000000000009"
        )
    )
    other = DiscordConfig(
        webhook_url=SecretStr(f"https://discord.com/api/webhooks/1200000000000000456/{token}")
    )
    assert destination_key("discord", hook) == destination_key("discord", same_hook_other_thread)
    assert destination_key("discord", hook) != destination_key("discord", other)
    assert token not in destination_key("discord", hook)
    a = WebhookConfig(url=SecretStr("https://hooks.example/a?sig=1"))
    b = WebhookConfig(url=SecretStr("https://hooks.example/a?sig=2"))
    c = WebhookConfig(url=SecretStr("https://hooks.example/b"))
    assert destination_key("webhook", a) == destination_key("webhook", b) != destination_key("webhook", c)
    key = "R0UTINGKEY0123456789012345678901"
    pd = destination_key("pagerduty", PagerDutyConfig(routing_key=SecretStr(key)))
    assert key not in pd and pd.startswith("pagerduty:")
    assert default_rate("discord") == Rate(2.25, 1)
    assert default_rate("webhook") is None


class Clock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def backlog_pacer(pacer: Pacer, clock: Clock) -> Pacer:
    settings = pacer.settings.model_copy(
        update={
            "bulkhead_sends_per_destination": 2,
            "bulkhead_parked_per_destination": 1,
            "bulkhead_backlog_per_destination": 3,
            "bulkhead_fast_s": 1.0,
        }
    )
    return Pacer(settings, clock=clock)


def test_past_the_parking_places_a_burst_queues_and_each_freed_place_goes_to_the_oldest_with_room(
    pacer: Pacer,
):
    """Repro (before): past the parking places every delivery went to `waiting` for the sweeper's next round,
    even while its destination was draining the burst. Now up to `bulkhead_backlog_per_destination` queue in
    the process (holding no room among its sends) and take freed places after the parked, in order."""
    clock = Clock()
    pacer = backlog_pacer(pacer, clock)
    entered, over = pacer.enter(asks(7, rate=None))
    park, queued, rest = pacer.parkable(over)
    assert (len(entered), len(park), len(queued), len(rest)) == (2, 1, 3, 1)
    destination = entered[0].destination
    pacer.park(park)
    queued_before = queued_gauge()
    pacer.queue(queued)
    pacer.queue(queued[:1])  # queued again (republished and claimed meanwhile): still one place in line
    assert pacer.backlog_count == 3
    assert queued_gauge() - queued_before == 3
    pacer.leave([destination])
    assert pacer.unpark([destination], never_room) == [park[0].delivery_id]  # the parked first
    assert pacer.enter([park[0]]) == ([park[0]], [])
    pacer.leave([destination])
    asked: list[int] = []

    def no_room(n: int) -> bool:
        asked.append(n)
        return False

    assert pacer.unpark([destination], no_room) == []  # a queued one needs room among the process's sends
    assert asked == [1]
    assert pacer.unpark([destination], always_room) == [queued[0].delivery_id]
    assert pacer.backlog_count == 2
    # Queued too long (the destination stopped freeing places): for `waiting`, oldest first.
    clock.now_s += 11
    assert [a.delivery_id for a in pacer.expire(10, backlog=True)] == [a.delivery_id for a in queued[1:]]
    assert pacer.backlog_count == 0
    assert queued_gauge() == queued_before


def queued_gauge() -> float:
    return REGISTRY.get_sample_value("herald_bulkhead_queued") or 0.0


def test_a_destination_that_may_hang_gets_no_backlog_and_one_answering_fast_does(pacer: Pacer):
    """Only a destination draining a burst queues: busy for less than `bulkhead_fast_s`, or answering fast.
    One whose sends have been in flight longer with no fast answer may hang: its overflow is `waiting`'s."""
    clock = Clock()
    pacer = backlog_pacer(pacer, clock)
    slow = "webhook:slow"
    pacer.enter(asks(2, destination=slow, rate=None))
    pacer.parkable(asks(1, destination=slow, rate=None))  # not parked: the parking places stay free
    clock.now_s += 1.5  # its first send began 1.5 s ago and nothing came back
    park, queued, rest = pacer.parkable(asks(3, destination=slow, rate=None))
    assert (len(park), len(queued), len(rest)) == (1, 0, 2)
    pacer.observe([(slow, 0.05)])  # it answers fast again (one place earned)
    park, queued, rest = pacer.parkable(asks(3, destination=slow, rate=None))
    assert (len(park), len(queued), len(rest)) == (1, 2, 0)
    clock.now_s += 1.5  # and then stops answering
    assert pacer.parkable(asks(2, destination=slow, rate=None))[1] == []


def test_no_backlog_when_every_wait_is_the_sweepers(pacer: Pacer):
    settings = pacer.settings.model_copy(
        update={
            "bulkhead_sends_per_destination": 1,
            "bulkhead_parked_per_destination": 0,
            "pacing_hold_max_s": 0,
        }
    )
    pacer = Pacer(settings)
    _, over = pacer.enter(asks(3, rate=None))
    assert pacer.parkable(over) == ([], [], over)
