"""shared/logging.py: the JSON line format, URL redaction, and the sweep's chatter moved to DEBUG."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.logging import (
    BEAT_LOGGER,
    TASK_TRACE_LOGGER,
    JsonFormatter,
    RedactingFilter,
    SweepChatterFilter,
    redact_urls,
)
from shared.tasknames import TASK_DELIVER, TASK_SWEEP

SECRET = "T000/B000/s3cr3t-t0ken"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("herald.test.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_is_one_object_per_line_with_the_ids_as_fields(captured):
    logger, stream = captured
    logger.warning(
        "attempt failed:\nsecond line",
        extra={"delivery_id": "d-1", "event_id": "e-1", "integration_id": "i-1", "unrelated": "x"},
    )
    logger.info("plain %s", "message")
    first, second = lines(stream)
    assert first["level"] == "WARNING" and first["logger"] == "herald.test.logging"
    assert first["message"] == "attempt failed:\nsecond line"
    assert (first["delivery_id"], first["event_id"], first["integration_id"]) == ("d-1", "e-1", "i-1")
    assert "unrelated" not in first
    assert str(first["time"]).endswith("+00:00")
    assert second["message"] == "plain message" and "delivery_id" not in second


def test_exceptions_stay_on_the_line_and_lose_their_urls(captured):
    logger, stream = captured
    try:
        raise ValueError(f"POST https://hooks.slack.com/services/{SECRET} failed")
    except ValueError:
        logger.exception("send failed for https://user:pw@hooks.example:8443/x/%s?token=abc", SECRET)
    [line] = lines(stream)
    assert SECRET not in json.dumps(line) and "pw@" not in json.dumps(line)
    assert line["message"] == "send failed for https://hooks.example:8443/********"
    assert "ValueError: POST https://hooks.slack.com/******** failed" in str(line["exception"])


def test_redact_urls_keeps_scheme_host_and_port():
    assert redact_urls("to http://127.0.0.1:9000/hook?k=v then") == "to http://127.0.0.1:9000/******** then"
    assert redact_urls("https://discord.com/api/webhooks/1/abc") == "https://discord.com/********"
    assert redact_urls("no url, and https://host.example alone") == "no url, and https://host.example alone"
    assert redact_urls("wss://u:p@relay.example") == "wss://relay.example"


@pytest.fixture
def set_level() -> Iterator[Callable[[str, int], None]]:
    """Sets a logger's level for the test (setLevel, unlike assigning, clears the isEnabledFor cache)."""
    saved: dict[str, int] = {}

    def set_(name: str, level: int) -> None:
        saved.setdefault(name, logging.getLogger(name).level)
        logging.getLogger(name).setLevel(level)

    yield set_
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _emit(name: str, level: int, msg: str, args: object) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(name, level, __file__, 1, msg, args, None)  # type: ignore[arg-type]


def test_sweep_lines_become_debug_other_task_lines_stay(set_level):
    chatter = SweepChatterFilter()
    set_level(TASK_TRACE_LOGGER, logging.INFO)
    sweep = _emit(
        TASK_TRACE_LOGGER, logging.INFO, "Task %(name)s[%(id)s] succeeded", {"name": TASK_SWEEP, "id": "1"}
    )
    deliver = _emit(
        TASK_TRACE_LOGGER, logging.INFO, "Task %(name)s[%(id)s] ok", {"name": TASK_DELIVER, "id": "2"}
    )
    assert chatter.filter(sweep) is False  # INFO logging: dropped
    assert chatter.filter(deliver) is True and deliver.levelname == "INFO"
    set_level(TASK_TRACE_LOGGER, logging.DEBUG)
    again = _emit(
        TASK_TRACE_LOGGER, logging.INFO, "Task %(name)s[%(id)s] received", {"name": TASK_SWEEP, "id": "3"}
    )
    assert chatter.filter(again) is True and again.levelname == "DEBUG"


def test_beat_keeps_its_first_sweep_line(set_level):
    set_level(BEAT_LOGGER, logging.INFO)
    chatter = SweepChatterFilter()
    chatter.keep_first = True
    fmt = "Scheduler: Sending due task %s (%s)"
    first, second = (_emit(BEAT_LOGGER, logging.INFO, fmt, ("sweep", TASK_SWEEP)) for _ in range(2))
    other = _emit(BEAT_LOGGER, logging.INFO, fmt, ("retention", "herald.retention"))
    assert [chatter.filter(r) for r in (first, second, other)] == [True, False, True]


def test_the_api_under_uvicorn_logs_json_without_query_strings():
    """configure_logging over uvicorn's own logging config (as the API's lifespan runs it): uvicorn's error and
    access loggers print JSON too, and an access line keeps the path but not the query. A subprocess, so the
    test's own logging is left alone."""
    script = """
import logging, logging.config
import uvicorn.config
from shared.config import Settings
from shared.logging import configure_logging
logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)
configure_logging(Settings(log_format="json"))
logging.getLogger("uvicorn.error").info("Uvicorn running on http://127.0.0.1:8000/x")
logging.getLogger("uvicorn.access").info(
    '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/v1/oauth/slack/callback?code=s3cret&state=x", "1.1", 302
)
logging.getLogger("api.app").warning("using the built-in development encryption key")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
    )
    # uvicorn's access lines go to stdout, the others to stderr: every line of both is one JSON object.
    records = {r["logger"]: r for r in map(json.loads, (done.stdout + done.stderr).splitlines())}
    assert sorted(records) == ["api.app", "uvicorn.access", "uvicorn.error"]
    assert records["uvicorn.error"]["message"] == "Uvicorn running on http://127.0.0.1:8000/********"
    access = records["uvicorn.access"]["message"]
    assert "/v1/oauth/slack/callback?********" in access and "s3cret" not in access
    assert records["api.app"]["level"] == "WARNING"
