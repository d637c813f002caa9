"""Microsoft Teams: an Adaptive Card in the `message` envelope both the Workflows trigger and the legacy
connector accept (reference/provider-protocols.md §3).

Teams documents no per-element limits, but the connector refuses bodies around 28 KB ("HTTP error 413"), so the
card is kept under a byte budget: the text shrinks first, then facts are dropped with a note.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.render.common import TRUNCATION_MARKER, severity_label, truncate
from shared.rendering import RenderedMessage

CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
MAX_TITLE_CHARS = 500
MAX_TEXT_CHARS = 8000
MAX_FACTS = 30
MAX_FACT_TITLE_CHARS = 200
MAX_FACT_VALUE_CHARS = 1000
MAX_BODY_BYTES = 24 * 1024

_COLOUR = {"info": "Default", "warning": "Warning", "error": "Attention", "critical": "Attention"}


def _title_colour(message: RenderedMessage) -> str:
    if message.event_type.endswith((".success", ".resolved")):
        return "Good"
    return _COLOUR.get(message.severity, "Default")


def _facts(fields: list[tuple[str, str]]) -> list[dict[str, str]]:
    facts = [
        {"title": truncate(n, MAX_FACT_TITLE_CHARS), "value": truncate(v, MAX_FACT_VALUE_CHARS)}
        for n, v in fields
    ]
    if len(facts) > MAX_FACTS:
        facts = [
            *facts[: MAX_FACTS - 1],
            {"title": TRUNCATION_MARKER, "value": f"{len(fields) - MAX_FACTS + 1} more field(s) not shown"},
        ]
    return facts


def render_card(
    message: RenderedMessage, *, text_chars: int = MAX_TEXT_CHARS, facts_kept: int | None = None
) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": truncate(message.title, MAX_TITLE_CHARS),
            "size": "Large",
            "weight": "Bolder",
            "color": _title_colour(message),
            "wrap": True,
        }
    ]
    if message.text:
        body.append({"type": "TextBlock", "text": truncate(message.text, text_chars), "wrap": True})
    facts = _facts(message.fields)
    if facts_kept is not None and facts_kept < len(facts):
        dropped = len(message.fields) - facts_kept
        facts = [
            *facts[:facts_kept],
            {"title": TRUNCATION_MARKER, "value": f"{dropped} more field(s) not shown"},
        ]
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    footer = severity_label(message.severity) + (f" · {message.footer}" if message.footer else "")
    body.append({"type": "TextBlock", "text": footer, "isSubtle": True, "size": "Small", "wrap": True})
    card: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    }
    if message.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "View details", "url": message.link}]
    return card


def envelope(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def render(message: RenderedMessage) -> dict[str, Any]:
    body = envelope(render_card(message))
    excess = len(orjson.dumps(body)) - MAX_BODY_BYTES
    if excess <= 0:
        return body
    # Bytes, not characters: cut generously (4 bytes per character at worst) and re-measure.
    text_chars = max(200, len(message.text) - excess)
    body = envelope(render_card(message, text_chars=text_chars))
    facts_kept = min(len(message.fields), MAX_FACTS)
    while len(orjson.dumps(body)) > MAX_BODY_BYTES and facts_kept > 0:
        facts_kept = max(0, facts_kept - max(1, facts_kept // 4))
        body = envelope(render_card(message, text_chars=200, facts_kept=facts_kept))
    return body
