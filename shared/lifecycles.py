"""One message per lifecycle per destination: what to do with each pending delivery (pure, no I/O).

Input: every known delivery of ONE (lifecycle, destination) pair, with its state, the event's `event_time`
(when it happened at the source), its arrival `sequence` (order of acceptance; ties on event_time are broken by
it) and the vendor reference of the message it produced (`provider_ref`, once delivered).
Output: for each *pending* delivery (pending | retrying | waiting), one decision:

- `SEND_ROOT`: post a new message (nothing of this lifecycle is shown at the destination yet, or the message
  that was shown died: a dead root does not block the lifecycle, the next state posts a new root);
- `SEND_EDIT(ref)`: edit the shown message `ref` into this state;
- `WAIT`: a root message is being sent (or is due) and its reference is not known yet; an update must not post
  a second root, so it waits;
- `SUPERSEDE`: a newer state of the lifecycle is waiting (or is already shown): sending this one would be
  wasted or, worse, would overwrite a newer state with an older one.

Rules, in order:
1. Order is (event_time, sequence): newer means a larger event_time, or the same one and a later arrival.
2. The "shown" state is the newest delivered delivery; its ref is the one to edit. A delivered delivery with
   no ref (the vendor cannot edit) still counts as shown for ordering, but an edit then posts a new message.
3. Only the newest pending delivery may be sent; every other pending one is superseded. A pending delivery
   older than (or equal to) the shown state is superseded too: an older state never overwrites a newer one.
4. The newest pending one: if a delivery is `sending` and nothing is shown yet (a root in flight), WAIT;
   if a delivery newer than it is in flight, SUPERSEDE (the in-flight one wins when it lands);
   else if a ref is shown, SEND_EDIT(ref); else SEND_ROOT.
The workers' state machine applies these decisions with guarded statements (issue 11: wired in later).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

#: delivery states that still wait for a decision
PENDING_STATES = frozenset({"pending", "retrying", "waiting"})


class Action(StrEnum):
    SEND_ROOT = "send_root"
    SEND_EDIT = "send_edit"
    WAIT = "wait"
    SUPERSEDE = "supersede"


@dataclass(frozen=True)
class Known:
    """One delivery of the (lifecycle, destination) pair, as the state machine knows it."""

    delivery_id: str
    state: str  # a DeliveryState value: pending, sending, delivered, retrying, dead, skipped, superseded, waiting
    event_time: float
    sequence: int
    provider_ref: str | None = None

    @property
    def order(self) -> tuple[float, int]:
        return (self.event_time, self.sequence)


@dataclass(frozen=True)
class Decision:
    action: Action
    edit_ref: str | None = None  # set for SEND_EDIT
    reason: str = ""


def decide(deliveries: Iterable[Known]) -> dict[str, Decision]:
    """The decision for each pending delivery of one (lifecycle, destination), keyed by delivery id."""
    known = list(deliveries)
    pending = [d for d in known if d.state in PENDING_STATES]
    if not pending:
        return {}
    delivered = [d for d in known if d.state == "delivered"]
    shown = max(delivered, key=lambda d: d.order, default=None)
    in_flight = [d for d in known if d.state == "sending"]
    newest = max(pending, key=lambda d: d.order)
    decisions: dict[str, Decision] = {}
    for d in pending:
        if d is not newest:
            decisions[d.delivery_id] = Decision(Action.SUPERSEDE, reason="a newer state is waiting")
    if shown is not None and newest.order <= shown.order:
        decisions[newest.delivery_id] = Decision(Action.SUPERSEDE, reason="a newer state is already shown")
        return decisions
    newer_in_flight = [d for d in in_flight if d.order > newest.order]
    if newer_in_flight:
        decisions[newest.delivery_id] = Decision(Action.SUPERSEDE, reason="a newer state is being sent")
        return decisions
    if in_flight and shown is None:
        # The root is on its way and its reference is unknown: posting now would make a second root.
        decisions[newest.delivery_id] = Decision(
            Action.WAIT, reason="the root message's reference is not known"
        )
        return decisions
    if in_flight:
        # An older edit is in flight: wait for it to land so the newer state is the last write.
        decisions[newest.delivery_id] = Decision(Action.WAIT, reason="an older edit is being sent")
        return decisions
    if shown is not None and shown.provider_ref:
        decisions[newest.delivery_id] = Decision(Action.SEND_EDIT, edit_ref=shown.provider_ref)
    else:
        why = "the shown message cannot be edited" if shown is not None else "nothing is shown yet"
        decisions[newest.delivery_id] = Decision(Action.SEND_ROOT, reason=why)
    return decisions
