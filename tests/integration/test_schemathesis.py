"""Property-based run of schemathesis over the whole OpenAPI schema, against the real API on a database of its
own (PostgreSQL, Redis): no operation answers 5xx, every answer matches its documented status codes and
schema, and no secret ever appears in a response or in the logs captured during the run.

Bounded so the whole module takes well under a minute: few examples per operation, no shrinking."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import ServerError

from tests.conftest import admin_exec, sqlalchemy_url
from tests.integration.conftest import claimed_redis_db
from tests.integration.stack import ADMIN_KEY, AUTH, Stack

pytestmark = pytest.mark.integration

WEBHOOK_TOKEN = "st-url-token-" + uuid.uuid4().hex
HEADER_SECRET = "st-header-" + uuid.uuid4().hex
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SLACK_PATH_SECRET = "st-slack-" + uuid.uuid4().hex
SECRETS = (WEBHOOK_TOKEN, HEADER_SECRET, SIGNING_SECRET, SLACK_PATH_SECRET, ADMIN_KEY)


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def log_lines() -> Iterator[list[str]]:
    handler = _Collect()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def fuzz_stack(template_db: str, tmp_path_factory: pytest.TempPathFactory, log_lines) -> Iterator[Stack]:
    name = f"herald_t_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        with claimed_redis_db() as redis_db:
            s = Stack(sqlalchemy_url(name), redis_db, tmp_path_factory.mktemp("fuzz"))
            try:
                yield s
            finally:
                s.close()
    finally:
        admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def fuzz_api(fuzz_stack: Stack) -> Iterator[str]:
    from api.app import create_app

    app = create_app(fuzz_stack.settings())
    with fuzz_stack.client() as client:
        # Something with secrets in every table the API reads, so a leak has something to leak.
        for body in (
            {
                "name": "secret hook",
                "provider": "webhook",
                "config": {
                    "url": f"https://hooks.example/in?token={WEBHOOK_TOKEN}",
                    "headers": {"Authorization": HEADER_SECRET},
                    "signing_secret": SIGNING_SECRET,
                },
            },
            {
                "name": "slack",
                "provider": "slack",
                "project": "fuzz",
                "config": {"webhook_url": f"https://hooks.slack.com/services/T1/B1/{SLACK_PATH_SECRET}"},
            },
        ):
            r = client.post("/v1/integrations", headers=AUTH, json=body)
            assert r.status_code == 201, r.text
            r = client.post(
                "/v1/routes",
                headers=AUTH,
                json={"integration_id": r.json()["data"]["id"], "project": body.get("project")},
            )
            assert r.status_code == 201, r.text
    # Served over real HTTP by uvicorn, lifespan and all (the async ingest pool lives on its loop).
    with serve(app) as base_url:
        yield base_url


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 8


def fuzz(base_url: str, secrets: tuple[str, ...] = ()) -> list[str]:
    """Run valid and invalid examples of every operation through the checks; raise on the first failure."""
    # A generous timeout: building the OpenAPI document of the whole app takes seconds of CPU, and with the suite
    # in 4 processes on 2 cores it once took longer than schemathesis's default of 10 s.
    api_schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=60)
    seen: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def run(case) -> None:
                response = case.call(base_url=base_url, headers=AUTH)
                for secret in secrets:
                    assert secret not in response.text, f"{case.method} {case.path} leaked a secret"
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                # nothing to make invalid (no parameters, no body): only the valid examples apply
                assert mode is GenerationMode.NEGATIVE
        seen.append(f"{operation.method.upper()} {operation.path}")
    return seen


def test_no_operation_fails_or_leaks(fuzz_api, log_lines: list[str], fuzz_stack: Stack):
    seen = fuzz(fuzz_api, SECRETS)
    assert len(seen) >= 25  # every route is in the schema (health, events, management)
    # No secret in the logs of the run, checked in this test rather than one after it: with the suite spread
    # over pytest-xdist workers, a second test may run in a process that saw no fuzzing at all.
    captured = "\n".join(log_lines)
    assert "/v1/" in captured  # the handler did capture the run's request logs
    for secret in SECRETS:
        assert secret not in captured, "a secret reached the API's logs"
    for path in Path(fuzz_stack.workdir).glob("*.log"):
        text = path.read_text(errors="replace")
        assert not any(secret in text for secret in SECRETS), path
    print(
        f"\nschemathesis: {len(seen)} operations, up to {EXAMPLES_PER_OPERATION} valid + invalid examples each"
    )


def test_the_harness_does_catch_a_server_error():
    broken = FastAPI()

    @broken.get("/v1/broken")
    def _broken(n: int = 0) -> JSONResponse:
        return JSONResponse({"n": n}, status_code=500 if n % 2 == 0 else 200)

    with serve(broken) as base_url, pytest.raises(BaseExceptionGroup) as failures:
        fuzz(base_url)
    assert failures.group_contains(ServerError)
