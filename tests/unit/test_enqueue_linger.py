"""The API's fan-out linger (api/enqueue.py): short for a lone event, growing while batches fill, capped, and
short again after a quiet spell."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.enqueue import next_linger_s
from shared.config import Settings

MIN_S, MAX_S = 0.010, 0.030


@pytest.mark.parametrize(
    ("previous_ids", "since_s", "expected_s"),
    [
        (0, float("inf"), MIN_S),  # the first batch of a process
        (1, 0.015, MIN_S),  # one event at a time: no wait beyond the shortest
        (2, 0.015, 0.020),  # batches fill: the wait grows with them
        (3, 0.030, MAX_S),
        (400, 0.030, MAX_S),  # capped
        (400, 0.061, MIN_S),  # a quiet spell after a burst: a lone event does not wait as if it went on
        (400, 0.059, MAX_S),
    ],
)
def test_linger(previous_ids: int, since_s: float, expected_s: float) -> None:
    assert next_linger_s(previous_ids, since_s, MIN_S, MAX_S) == pytest.approx(expected_s)


def test_equal_bounds_are_a_fixed_linger() -> None:
    assert next_linger_s(50, 0.0, MIN_S, MIN_S) == MIN_S


def test_a_longest_linger_below_the_shortest_is_refused_at_startup() -> None:
    with pytest.raises(ValidationError, match="HERALD_FANOUT_LINGER_MAX_S"):
        Settings(fanout_linger_s=0.05, fanout_linger_max_s=0.02)
