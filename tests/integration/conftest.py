"""Integration fixtures: a shared running stack (worker + beat) and a fresh one for crash tests."""

from __future__ import annotations

import contextlib
import fcntl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import admin_exec, sqlalchemy_url
from tests.fakes.server import FakeServer
from tests.fakes.smtp import session_tls
from tests.fakes.webhook import webhook_receiver
from tests.integration.stack import Stack

# Redis databases 1-13 are the tests'; 0 is `make run`'s and 14 the benchmark's. Each stack holds an flock on
# its database number, so test sessions running side by side (several engineers, one machine) never share one.
REDIS_TEST_DBS = range(1, 14)


# With `pytest -n` several test processes claim databases at once; when all are held, wait this long for one.
CLAIM_WAIT_S = 180.0


@contextlib.contextmanager
def claimed_redis_db() -> Iterator[int]:
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        for db in REDIS_TEST_DBS:
            handle = open(f"/tmp/herald-test-redis-db-{db}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield db
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError("every test Redis database is in use by another test session")
        time.sleep(0.5)


def _new_db(template_db: str) -> str:
    name = f"herald_t_{uuid.uuid4().hex[:10]}"
    admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    return name


@pytest.fixture(scope="session")
def stack(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One Herald shared by the tests that only post events and watch them land."""
    name = _new_db(template_db)
    with claimed_redis_db() as redis_db:
        # The worker trusts the tests' CA, which the TLS fakes (SMTP, APNs) serve.
        s = Stack(
            sqlalchemy_url(name),
            redis_db,
            tmp_path_factory.mktemp("stack"),
            HERALD_TLS_CA_FILE=session_tls().ca_file,
        )
        try:
            s.start_worker()
            s.start_beat()
            yield s
        finally:
            s.close()
            admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def own_stack(template_db: str, tmp_path: Path) -> Iterator[Stack]:
    """A Herald of the test's own, for tests that kill workers or flush Redis. Nothing is started yet."""
    name = _new_db(template_db)
    with claimed_redis_db() as redis_db:
        s = Stack(sqlalchemy_url(name), redis_db, tmp_path)
        try:
            yield s
        finally:
            s.close()
            admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def api(stack: Stack) -> Iterator[TestClient]:
    with stack.client() as client:
        yield client


@pytest.fixture(scope="session")
def receiver() -> Iterator[FakeServer]:
    with webhook_receiver() as server:
        yield server


@pytest.fixture
def hook_path() -> str:
    return f"/hook/{uuid.uuid4().hex}"


@pytest.fixture
def project() -> str:
    return f"proj-{uuid.uuid4().hex[:8]}"
