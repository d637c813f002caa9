"""Email rendering shared by the SMTP and SES providers: subject, plain text and HTML from one message.

Also the configuration fields every email integration has (sender, recipients, seed 003's "default email
configuration" flag), so both providers validate addresses the same way. The HTML comes from a Jinja2 template
written for mail clients (tables and inline styles, no CSS classes or scripts) with autoescape on; the text
part carries the same facts and reads well on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.rendering import RenderedMessage

#: severity -> (accent colour, label); colours pass WCAG AA as white text on them
SEVERITY_STYLE: dict[str, tuple[str, str]] = {
    "info": ("#2563eb", "INFO"),
    "warning": ("#b45309", "WARNING"),
    "error": ("#dc2626", "ERROR"),
    "critical": ("#7f1d1d", "CRITICAL"),
}
MAX_SUBJECT_CHARS = 200
MAX_RECIPIENTS = 50
# An address or a display-name form "Name <a@b>"; the local part and domain are kept loose on purpose
# (the server is the judge), but whitespace, angle brackets and line breaks never pass.
_ADDRESS = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}$")
_NAMED = re.compile(r"^(?P<name>[^<>\r\n\"]{0,100}?)\s*<(?P<addr>[^<>]+)>$")


def check_address(value: str, *, allow_name: bool = False) -> str:
    """A plain address (or "Name <address>" when allowed), refused on anything that could inject a header."""
    value = value.strip()
    if any(c in value for c in "\r\n\0"):
        raise ValueError("email address must not contain line breaks")
    named = _NAMED.match(value) if allow_name else None
    address = named.group("addr").strip() if named else value
    if not _ADDRESS.match(address):
        raise ValueError(f"{value[:80]!r} is not an email address")
    return value


class EmailConfig(BaseModel):
    """Fields common to every email integration (seed 003's "Send email from" and the recipients)."""

    model_config = ConfigDict(extra="forbid")

    from_address: str = Field(description='Send email from: "ops@example.com" or "Herald <ops@example.com>"')
    to: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    reply_to: str | None = None
    #: seed 003's "Set as default configuration to send emails" (see docs/providers-email-push.md)
    default: bool = False
    subject_prefix: str = Field("", max_length=40)
    timeout_s: float = Field(10.0, gt=0, le=60)

    @field_validator("from_address")
    @classmethod
    def _from(cls, value: str) -> str:
        return check_address(value, allow_name=True)

    @field_validator("to", "cc")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        checked = [check_address(v) for v in value]
        if len({v.lower() for v in checked}) != len(checked):
            raise ValueError("recipients must not repeat")
        return checked

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value, allow_name=True)

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if any(c in value for c in "\r\n\0"):
            raise ValueError("subject prefix must not contain line breaks")
        return value

    def recipients(self) -> list[str]:
        return [*self.to, *self.cc]


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str

    def as_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "text": self.text, "html": self.html}


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("providers", "templates"),
        # Autoescape on for the HTML template; the text template is plain text and must not be escaped.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def subject_for(message: RenderedMessage, prefix: str = "") -> str:
    """`[prefix ][SEVERITY] title` for warnings and worse; a one-line header, at most 200 characters."""
    _, label = SEVERITY_STYLE.get(message.severity, SEVERITY_STYLE["info"])
    tag = f"[{label}] " if message.severity in ("warning", "error", "critical") else ""
    subject = f"{prefix.strip()} {tag}{message.title}".strip() if prefix.strip() else f"{tag}{message.title}"
    subject = " ".join(subject.split())  # no line breaks can reach a header
    if len(subject) > MAX_SUBJECT_CHARS:
        subject = subject[: MAX_SUBJECT_CHARS - 1] + "…"
    return subject


def _safe_link(link: str | None) -> str | None:
    # Only web links become a button: a javascript: or data: URL in an event must not become clickable.
    if link and re.match(r"^https?://[^\s\"'<>]+$", link) and len(link) <= 2048:
        return link
    return None


def render_email(message: RenderedMessage, *, subject_prefix: str = "") -> EmailContent:
    colour, label = SEVERITY_STYLE.get(message.severity, SEVERITY_STYLE["info"])
    context: dict[str, Any] = {
        "title": message.title,
        "text": message.text,
        "fields": message.fields,
        "severity": message.severity,
        "severity_label": label,
        "colour": colour,
        "link": _safe_link(message.link),
        "footer": message.footer or "Herald",
        "event_type": message.event_type,
    }
    env = _environment()
    return EmailContent(
        subject=subject_for(message, subject_prefix),
        text=env.get_template("email.txt").render(context),
        html=env.get_template("email.html").render(context),
    )


__all__ = ["SEVERITY_STYLE", "EmailConfig", "EmailContent", "check_address", "render_email", "subject_for"]
