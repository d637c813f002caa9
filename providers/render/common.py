"""Helpers every renderer shares: truncation with a marker, severity colours and labels."""

from __future__ import annotations

from shared.rendering import RenderedMessage

#: appended where text was cut to fit a vendor limit, so a reader knows something is missing
TRUNCATION_MARKER = "… (truncated)"

#: severity -> (RGB colour, label); the colours read on both light and dark chat themes
SEVERITY_STYLE: dict[str, tuple[int, str]] = {
    "info": (0x2563EB, "INFO"),
    "warning": (0xD97706, "WARNING"),
    "error": (0xDC2626, "ERROR"),
    "critical": (0x7F1D1D, "CRITICAL"),
}
SUCCESS_COLOUR = 0x16A34A


def truncate(text: str, limit_chars: int, marker: str = TRUNCATION_MARKER) -> str:
    """`text` cut to at most `limit_chars` characters, ending in `marker` when anything was cut."""
    if len(text) <= limit_chars:
        return text
    if limit_chars <= len(marker):
        return text[:limit_chars]
    return text[: limit_chars - len(marker)].rstrip() + marker


def colour(message: RenderedMessage) -> int:
    """Green for things that went well, otherwise the severity's colour."""
    if message.event_type.endswith((".success", ".resolved")):
        return SUCCESS_COLOUR
    return SEVERITY_STYLE.get(message.severity, SEVERITY_STYLE["info"])[0]


def severity_label(severity: str) -> str:
    return SEVERITY_STYLE.get(severity, (0, severity.upper()))[1]
