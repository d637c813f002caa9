"""Discord execute-webhook body: one embed, mentions disabled, within Discord's limits.

Limits (reference/provider-protocols.md §2): title 256, description 4096, 25 fields of name 256 / value 1024,
footer 2048, and all of those together at most 6000 characters; content 2000. Over the total, the description
shrinks first, then fields are dropped (with a note saying how many).
"""

from __future__ import annotations

from typing import Any

from providers.render.common import TRUNCATION_MARKER, colour, severity_label, truncate
from shared.rendering import RenderedMessage

MAX_CONTENT_CHARS = 2000
MAX_TITLE_CHARS = 256
MAX_DESCRIPTION_CHARS = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME_CHARS = 256
MAX_FIELD_VALUE_CHARS = 1024
MAX_FOOTER_CHARS = 2048
MAX_EMBED_TOTAL_CHARS = 6000
# Over the total, this much stays for fields before the description is cut further.
FIELDS_RESERVE_CHARS = 2500
# Discord refuses empty field names and values; a zero-width space renders as nothing.
_BLANK = "\u200b"
# Short values sit side by side (three to a row); long ones get the full width.
_INLINE_MAX_CHARS = 40


def _field(name: str, value: str) -> dict[str, Any]:
    return {
        "name": truncate(name, MAX_FIELD_NAME_CHARS) or _BLANK,
        "value": truncate(value, MAX_FIELD_VALUE_CHARS) or _BLANK,
        "inline": len(value) <= _INLINE_MAX_CHARS,
    }


def _embed_chars(embed: dict[str, Any]) -> int:
    return (
        len(embed.get("title", ""))
        + len(embed.get("description", ""))
        + len(embed.get("footer", {}).get("text", ""))
        + sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    )


def render_embed(message: RenderedMessage) -> dict[str, Any]:
    fields = [_field(n, v) for n, v in message.fields]
    if len(fields) > MAX_FIELDS:
        fields = [
            *fields[: MAX_FIELDS - 1],
            _field(TRUNCATION_MARKER, f"{len(message.fields) - MAX_FIELDS + 1} more field(s) not shown"),
        ]
    footer = severity_label(message.severity) + (f" · {message.footer}" if message.footer else "")
    embed: dict[str, Any] = {
        "title": truncate(message.title, MAX_TITLE_CHARS),
        "color": colour(message),
    }
    if message.text:
        embed["description"] = truncate(message.text, MAX_DESCRIPTION_CHARS)
    if message.link:
        embed["url"] = message.link
    if fields:
        embed["fields"] = fields
    embed["footer"] = {"text": truncate(footer, MAX_FOOTER_CHARS)}
    if created_at := message.data.get("created_at"):
        embed["timestamp"] = created_at

    if _embed_chars(embed) > MAX_EMBED_TOTAL_CHARS and "description" in embed:
        # Over the total: the description keeps what is left after the title, footer and some fields
        # (FIELDS_RESERVE_CHARS), and fields are dropped from the end below.
        fields_chars = sum(len(f["name"]) + len(f["value"]) for f in fields)
        fixed = len(embed["title"]) + len(embed["footer"]["text"]) + min(fields_chars, FIELDS_RESERVE_CHARS)
        embed["description"] = truncate(
            embed["description"], max(len(TRUNCATION_MARKER), MAX_EMBED_TOTAL_CHARS - fixed)
        )
    while _embed_chars(embed) > MAX_EMBED_TOTAL_CHARS and embed.get("fields"):
        shown = [f for f in embed["fields"] if f["name"] != TRUNCATION_MARKER][:-1]
        note = _field(TRUNCATION_MARKER, f"{len(message.fields) - len(shown)} more field(s) not shown")
        embed["fields"] = [*shown, note]
        if not shown:
            break
    return embed


def render(message: RenderedMessage, *, content: str | None = None) -> dict[str, Any]:
    """The JSON body for execute and edit; `allowed_mentions` empty so event text can never ping anyone."""
    body: dict[str, Any] = {"embeds": [render_embed(message)], "allowed_mentions": {"parse": []}}
    if content:
        body["content"] = truncate(content, MAX_CONTENT_CHARS)
    return body
