"""One email thread per lifecycle, for SMTP and SES alike: a state's threading headers and what is kept for the next.

RFC 5322 section 3.6.4: a reply's `In-Reply-To` is its parent's Message-ID and its `References` is the
parent's References followed by the parent's Message-ID, so every mail of a thread names the whole chain
back to the root (clients thread on it even when a mail in the middle never arrived).

The reference Herald keeps for a delivered mail (`delivery.provider_ref`, handed to the next state's send as
`previous_ref`) is therefore not the bare Message-ID but the chain a reply to that mail carries: the mail's own
References followed by its Message-ID, space-separated. The next state's mail takes In-Reply-To = the last id
and References = all of them, and keeps them plus its own Message-ID. The state machine never looks inside:
to it this is the vendor's message reference, as a Slack `ts` is.

A long lifecycle would grow the chain without end: past MAX_REFERENCES_CHARS the root's id and the newest
ones are kept and the middle is dropped (as RFC 5537 section 3.4.4 trims References), so the thread root and
the parent, which threading needs, are always there.
"""

from __future__ import annotations

import re

#: SES v2 takes a header value of at most 995 characters (MessageHeaderValue); SMTP folds a longer one, but one
#: limit keeps both providers alike and the chain within `delivery.provider_ref` (1024, migration 0008)
MAX_REFERENCES_CHARS = 995

# A Message-ID (`<left@right>`, no whitespace): only ids of this form become a threading header, so a stored
# reference can never inject a header line.
_MESSAGE_ID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")


def is_message_id(value: str) -> bool:
    return bool(_MESSAGE_ID.match(value))


def chain(ref: str | None) -> list[str]:
    """The Message-IDs of a kept reference, root first; [] if it is not one (the mail then starts a thread)."""
    ids = (ref or "").split()
    return ids if ids and all(is_message_id(i) for i in ids) else []


def reply_headers(ref: str | None) -> dict[str, str]:
    """`In-Reply-To` and `References` of a mail that follows the kept reference `ref` (none for a root)."""
    ids = chain(ref)
    if not ids:
        return {}
    return {"In-Reply-To": ids[-1], "References": " ".join(ids)}


def kept_ref(ref: str | None, message_id: str) -> str:
    """What to keep for a mail sent after `ref` with `message_id`: the chain a reply to it carries."""
    ids = [*chain(ref), message_id]
    # Drop the oldest after the root until it fits (a single id always fits: ours are short).
    while len(" ".join(ids)) > MAX_REFERENCES_CHARS and len(ids) > 2:
        del ids[1]
    return " ".join(ids)
