"""shared.lifecycles.decide: root, edit, wait, supersede per (lifecycle, destination); examples and properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.lifecycles import PENDING_STATES, Action, Known, decide

STATES = ("pending", "sending", "delivered", "retrying", "dead", "skipped", "superseded", "waiting")


def k(i: int, state: str, t: float, ref: str | None = None) -> Known:
    return Known(f"d{i}", state, t, i, ref)


def test_first_state_is_sent_as_root():
    assert decide([k(1, "pending", 10)])["d1"].action is Action.SEND_ROOT


def test_update_edits_the_shown_root():
    d = decide([k(1, "delivered", 10, "ts-1"), k(2, "pending", 11)])
    assert d["d2"].action is Action.SEND_EDIT and d["d2"].edit_ref == "ts-1"


def test_update_waits_while_root_reference_unknown():
    d = decide([k(1, "sending", 10), k(2, "pending", 11)])
    assert d["d2"].action is Action.WAIT


def test_only_newest_waiting_update_is_sent_others_superseded():
    d = decide([k(1, "delivered", 10, "ts"), k(2, "retrying", 11), k(3, "waiting", 12), k(4, "pending", 13)])
    assert d["d4"].action is Action.SEND_EDIT
    assert {d[i].action for i in ("d2", "d3")} == {Action.SUPERSEDE}


def test_older_state_never_overwrites_newer_shown_one():
    # Arrived later (sequence 3) but happened earlier (event_time 9) than the shown state.
    d = decide([k(1, "delivered", 10, "ts"), k(2, "delivered", 12, "ts"), Known("d3", "pending", 11, 3)])
    assert d["d3"].action is Action.SUPERSEDE


def test_same_event_time_is_ordered_by_arrival():
    d = decide([Known("a", "pending", 10, 1), Known("b", "pending", 10, 2)])
    assert d["b"].action is Action.SEND_ROOT and d["a"].action is Action.SUPERSEDE


def test_dead_root_does_not_block_next_update_posts_new_root():
    d = decide([k(1, "dead", 10), k(2, "pending", 11)])
    assert d["d2"].action is Action.SEND_ROOT


def test_shown_message_without_reference_gets_a_new_message():
    d = decide([k(1, "delivered", 10, None), k(2, "pending", 11)])
    assert d["d2"].action is Action.SEND_ROOT


def test_newer_state_in_flight_supersedes_older_pending():
    d = decide([k(1, "delivered", 10, "ts"), k(2, "sending", 13), Known("d3", "retrying", 12, 3)])
    assert d["d3"].action is Action.SUPERSEDE


def test_older_edit_in_flight_makes_newer_wait():
    d = decide([k(1, "delivered", 10, "ts"), k(2, "sending", 11), k(3, "pending", 12)])
    assert d["d3"].action is Action.WAIT


def test_nothing_pending_nothing_to_decide():
    assert decide([k(1, "delivered", 1, "x"), k(2, "dead", 2), k(3, "superseded", 0)]) == {}


known_lists = st.lists(
    st.builds(
        lambda state, t, ref: (state, t, ref),
        st.sampled_from(STATES),
        st.integers(0, 5).map(float),
        st.one_of(st.none(), st.sampled_from(["r1", "r2", "r3"])),
    ),
    max_size=8,
).map(lambda items: [Known(f"d{i}", s, t, i, ref) for i, (s, t, ref) in enumerate(items)])


@settings(max_examples=400, deadline=None)
@given(known_lists)
def test_properties(known):
    decisions = decide(known)
    pending = [d for d in known if d.state in PENDING_STATES]
    # every pending delivery gets exactly one decision, and nothing else does
    assert set(decisions) == {d.delivery_id for d in pending}
    active = [i for i, dec in decisions.items() if dec.action is not Action.SUPERSEDE]
    assert len(active) <= 1
    shown = max((d for d in known if d.state == "delivered"), key=lambda d: d.order, default=None)
    in_flight = [d for d in known if d.state == "sending"]
    for delivery_id, dec in decisions.items():
        me = next(d for d in known if d.delivery_id == delivery_id)
        if dec.action in (Action.SEND_ROOT, Action.SEND_EDIT):
            # never older than what is shown or being sent, and the newest pending one
            assert shown is None or me.order > shown.order
            assert all(me.order >= d.order for d in pending)
            assert not in_flight  # nothing is sent beside an in-flight message of the same pair
        if dec.action is Action.SEND_EDIT:
            assert shown is not None and dec.edit_ref == shown.provider_ref
        if dec.action is Action.SEND_ROOT:
            # a second root only when nothing editable is shown
            assert shown is None or shown.provider_ref is None
