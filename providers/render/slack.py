"""Slack Block Kit with a plain-text fallback, within Slack's limits.

Layout: a header (the title), the text as a section, the fields as two-column sections, a link, and a context
line with the severity and footer. Limits (reference/provider-protocols.md §1.2): 50 blocks, header 150 chars,
section text 3000, 10 fields per section of 2000 each, fallback `text` kept under 4000. Slack also refuses
messages whose blocks carry roughly 13k characters in total (`msg_blocks_too_long`, threshold undocumented), so
the blocks get a total budget below that.
"""

from __future__ import annotations

import re
from typing import Any

from providers.render.common import TRUNCATION_MARKER, severity_label, truncate
from shared.rendering import RenderedMessage

MAX_BLOCKS = 50
MAX_HEADER_CHARS = 150
MAX_SECTION_TEXT_CHARS = 3000
MAX_FIELDS_PER_SECTION = 10
MAX_FIELD_CHARS = 2000
MAX_FALLBACK_TEXT_CHARS = 4000
# Below the ~13.2k characters at which Slack answered msg_blocks_too_long in the wild.
MAX_BLOCKS_TEXT_CHARS = 12000

_EMOJI = {
    "info": ":information_source:",
    "warning": ":warning:",
    "error": ":x:",
    "critical": ":rotating_light:",
}
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def escape(text: str) -> str:
    """Slack's mrkdwn control characters: &, < and > must be entities, or user text could forge links/mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escaped(text: str, limit_chars: int) -> str:
    """`text` escaped for mrkdwn and cut to `limit_chars` without leaving half an entity behind."""
    out = escape(text)
    if len(out) <= limit_chars:
        return out
    head = out[: limit_chars - len(TRUNCATION_MARKER)]
    return _PARTIAL_ENTITY.sub("", head).rstrip() + TRUNCATION_MARKER


def link(url: str, label: str) -> str:
    # `|` separates the URL from its label, so it cannot appear raw in the URL.
    return f"<{escape(url).replace('|', '%7C')}|{escape(label)}>"


def emoji(message: RenderedMessage) -> str:
    if message.event_type.endswith((".success", ".resolved")):
        return ":white_check_mark:"
    return _EMOJI.get(message.severity, ":information_source:")


def fallback_text(message: RenderedMessage) -> str:
    """The notification text (what a phone or a screen reader shows), also used when blocks cannot render."""
    text = message.title + (f"\n{message.text}" if message.text else "")
    return escaped(text, MAX_FALLBACK_TEXT_CHARS)


def _text_len(block: dict[str, Any]) -> int:
    if "fields" in block:
        return sum(len(f["text"]) for f in block["fields"])
    if "elements" in block:
        return sum(len(e["text"]) for e in block["elements"])
    return len(block["text"]["text"])


def render_blocks(message: RenderedMessage) -> list[dict[str, Any]]:
    head: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": truncate(message.title, MAX_HEADER_CHARS), "emoji": True},
        }
    ]
    if message.text:
        head.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": escaped(message.text, MAX_SECTION_TEXT_CHARS)},
            }
        )
    field_texts = [escaped(f"*{name}*\n{value}", MAX_FIELD_CHARS) for name, value in message.fields]
    tail: list[dict[str, Any]] = []
    if message.link:
        tail.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": link(message.link, "View details")}}
        )
    context = f"{emoji(message)} *{severity_label(message.severity)}*"
    if message.footer:
        context += f" · {escape(message.footer)}"
    tail.append({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(context, 2000)}]})

    # Fields are what gets cut when the message is too big: the title, text, link and footer always show.
    room_blocks = MAX_BLOCKS - len(head) - len(tail)
    room_chars = MAX_BLOCKS_TEXT_CHARS - sum(_text_len(b) for b in head + tail)
    return head + _field_sections(field_texts, room_blocks, room_chars) + tail


def _field_sections(texts: list[str], room_blocks: int, room_chars: int) -> list[dict[str, Any]]:
    """Sections of up to 10 fields, as many fields as fit, then a note saying how many did not."""
    sections: list[list[str]] = []
    note_chars = 100  # room kept for the note, should one be needed
    for index, text in enumerate(texts):
        last = index == len(texts) - 1
        needs_new = not sections or len(sections[-1]) == MAX_FIELDS_PER_SECTION
        blocks_after = len(sections) + (1 if needs_new else 0) + (0 if last else 1)
        if blocks_after > room_blocks or len(text) > room_chars - (0 if last else note_chars):
            return [_section(chunk) for chunk in sections] + [_dropped_note(len(texts) - index)]
        if needs_new:
            sections.append([])
        sections[-1].append(text)
        room_chars -= len(text)
    return [_section(chunk) for chunk in sections]


def _section(texts: list[str]) -> dict[str, Any]:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": t} for t in texts]}


def _dropped_note(dropped_fields: int) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": f"{TRUNCATION_MARKER}: {dropped_fields} more field(s) not shown"}
        ],
    }


def render(message: RenderedMessage) -> dict[str, Any]:
    """The body for an incoming webhook or chat.postMessage (without `channel`)."""
    return {"text": fallback_text(message), "blocks": render_blocks(message)}
