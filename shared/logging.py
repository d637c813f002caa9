"""How every Herald process logs: the format chosen by HERALD_LOG_FORMAT, URL redaction, and quieter sweeps.

- `text` (default) keeps the servers' usual lines (Celery's, uvicorn's); `json` prints one JSON object per line
  (`time`, `level`, `logger`, `message`, plus `delivery_id`, `event_id`, `integration_id`, ... when a call passes
  them with `extra=`) for Kubernetes log pipelines.
- Every URL in a log line keeps its scheme, host and port and loses its path, query and credentials: webhook URLs
  carry their secret in the path (Slack, Discord, Teams), so a URL must never reach a log in full. uvicorn's
  access lines keep the request path but not its query string (an OAuth callback's code).
- The sweeper runs every second; Celery's "Task herald.sweep[...] received/succeeded" lines and beat's
  "Sending due task sweep" are logged at DEBUG (beat's first one stays at INFO, as proof that beat runs).

`configure_logging(settings)` applies all of it to the handlers already installed (by Celery, by uvicorn) or to a
stderr handler of its own when there are none. It is idempotent. The API calls it from its lifespan; the worker
and beat from Celery's `after_setup_logger` signal (workers/signals.py), and beat calls
`keep_first_beat_sweep_at_info()` when it starts.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from shared.config import Settings
from shared.tasknames import TASK_SWEEP

LogFormat = Literal["text", "json"]

# Fields a call may pass with `extra=` that the JSON format carries as fields of their own.
CONTEXT_FIELDS = (
    "delivery_id",
    "event_id",
    "integration_id",
    "provider",
    "error_class",
    "next_attempt_at",
    "task_id",
    "task_name",
)
# Loggers that servers give handlers of their own (not propagating to the root logger).
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery.task")
# Where Celery logs a task's receipt and success, and where beat logs what it sends.
TASK_RECEIVED_LOGGER = "celery.worker.strategy"
TASK_TRACE_LOGGER = "celery.app.trace"
BEAT_LOGGER = "celery.beat"
ACCESS_LOGGER = "uvicorn.access"

_URL = re.compile(r"\b((?:https?|wss?)://)(?:[^@/\s?#'\"]*@)?([^/\s?#'\"]+)[/?#][^\s'\"<>]*", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"\b((?:https?|wss?)://)[^@/\s?#'\"]*@", re.IGNORECASE)


def redact_urls(text: str) -> str:
    """Every URL reduced to scheme://host[:port]/******** (credentials dropped too)."""
    text = _URL.sub(r"\1\2/********", text)
    return _URL_CREDENTIALS.sub(r"\1", text)


class RedactingFilter(logging.Filter):
    """A handler filter that renders the message once and removes what URLs carry (see module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS_LOGGER and isinstance(record.args, tuple) and len(record.args) == 5:
            # uvicorn's access line: (client, method, path with query, HTTP version, status). A query string may
            # carry a secret (an OAuth callback's code), so only the path is logged.
            client, method, path, version, status = record.args
            if isinstance(path, str) and "?" in path:
                record.args = (client, method, path.split("?", 1)[0] + "?********", version, status)
        message = record.getMessage()
        redacted = redact_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # Formatted here so the traceback's text (exception messages may quote a URL) is redacted too.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the message is already redacted by RedactingFilter on the same handler."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            # Celery's task lines pass the task's context as `extra={"data": {...}}`.
            doc["task_id"], doc["task_name"] = data.get("id"), data.get("name")
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class SweepChatterFilter(logging.Filter):
    """A logger filter: the sweep task's routine lines become DEBUG records (dropped unless DEBUG is on).

    A filter on the emitting logger runs after its level check, so a record must be dropped here when DEBUG is
    not enabled rather than relabelled (the handlers would print a relabelled record anyway)."""

    def __init__(self, keep_first: bool = False) -> None:
        super().__init__()
        self.keep_first = keep_first

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _is_sweep_chatter(record):
            return True
        if self.keep_first:
            self.keep_first = False
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _is_sweep_chatter(record: logging.LogRecord) -> bool:
    args = record.args
    if record.name == BEAT_LOGGER:
        # info('Scheduler: Sending due task %s (%s)', entry.name, entry.task)
        return (
            isinstance(args, tuple)
            and len(args) == 2
            and args[1] == TASK_SWEEP
            and "Sending due" in str(record.msg)
        )
    # Celery passes the task's context as the single mapping argument: {'name': ..., 'id': ...}.
    return isinstance(args, dict) and args.get("name") == TASK_SWEEP


def _handlers() -> list[logging.Handler]:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        if root.level == logging.WARNING:  # the unconfigured default: INFO is what a server logs
            root.setLevel(logging.INFO)
    handlers = list(root.handlers)
    for name in SERVER_LOGGERS:
        handlers += [h for h in logging.getLogger(name).handlers if h not in handlers]
    return handlers


def configure_logging(settings: Settings) -> None:
    """Apply `settings.log_format` to every installed handler and quieten the sweeps; see module docstring."""
    log_format: LogFormat = settings.log_format
    for handler in _handlers():
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
        if log_format == "json" and not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())
    for name in (TASK_RECEIVED_LOGGER, TASK_TRACE_LOGGER, BEAT_LOGGER):
        logger = logging.getLogger(name)
        if not any(isinstance(f, SweepChatterFilter) for f in logger.filters):
            logger.addFilter(SweepChatterFilter())


def keep_first_beat_sweep_at_info() -> None:
    """In beat: its first "Sending due task sweep" line stays at INFO, so its log shows that it runs."""
    for f in logging.getLogger(BEAT_LOGGER).filters:
        if isinstance(f, SweepChatterFilter):
            f.keep_first = True
