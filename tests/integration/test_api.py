"""The ingestion and admin API against real PostgreSQL: bad input, auth, outages, secrets."""

from __future__ import annotations

import contextlib
import logging
import socket

import pytest
from sqlalchemy import create_engine, text

from tests.integration.stack import AUTH, Stack, release_event

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def error_of(response) -> tuple[int, str]:
    body = response.json()
    assert body["success"] is False and body["data"] is None and body["error"]
    return response.status_code, body["error_code"]


def test_unknown_field_is_422_with_code(api, project):
    r = api.post("/v1/events/release", headers=AUTH, json={**release_event(project), "colour": "blue"})
    assert error_of(r) == (422, "unknown_field")
    assert "colour" in r.json()["error"]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"type": "release.deleted"}, "invalid_field"),
        ({"mandatory": "yes"}, "invalid_field"),
        ({"version": ""}, "invalid_field"),
        ({"version": 3}, "invalid_field"),
        ({"url": "javascript:alert(1)"}, "invalid_field"),
        ({"type": "release.rollout_changed", "rollout_percent": 140}, "invalid_field"),
        ({"type": "release.promoted"}, "invalid_field"),  # needs from_environment
        ({"environment": None}, "invalid_field"),
    ],
)
def test_bad_release_fields_are_rejected(api, project, change, code):
    r = api.post("/v1/events/release", headers=AUTH, json={**release_event(project), **change})
    assert error_of(r) == (422, code)


def test_missing_field_and_malformed_json(api, project):
    body = release_event(project)
    del body["version"]
    assert error_of(api.post("/v1/events/release", headers=AUTH, json=body)) == (422, "missing_field")
    r = api.post("/v1/events/release", headers=AUTH, json=[1, 2])
    assert r.status_code == 422


def test_malformed_json_is_400_naming_the_position(api):
    """Repro (issue 10): a JSON syntax error answered 422 `"error": "39: JSON decode error"`, the character
    offset shown as if it were a field; the OpenAPI documents 400."""
    r = api.post(
        "/v1/events/release",
        headers={**AUTH, "Content-Type": "application/json"},
        content=b'{"type": "release.created",\n "project": }',
    )
    assert error_of(r) == (400, "malformed_json")
    assert "line 2, column 13 (char 40)" in r.json()["error"]


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"Content-Type": "text/plain"}, "'text/plain' is not supported"),
        # curl -d without -H: the body is JSON, the header says it is a form
        ({"Content-Type": "application/x-www-form-urlencoded"}, "'application/x-www-form-urlencoded'"),
        ({}, "Content-Type is missing"),
    ],
)
def test_body_not_declared_as_json_is_415(api, project, headers, says):
    """Repro (issues 10, 16): `curl -d '{...}'` got 422 "Input should be a valid dictionary"."""
    import orjson

    r = api.post(
        "/v1/events/release", headers={**AUTH, **headers}, content=orjson.dumps(release_event(project))
    )
    assert error_of(r) == (415, "unsupported_media_type")
    assert says in r.json()["error"] and "application/json" in r.json()["error"]


def test_unknown_event_kind_is_404_listing_the_kinds(api, project):
    """Repro (issue 16): `POST /v1/events/deploy` answered 405 Method Not Allowed."""
    r = api.post("/v1/events/deploy", headers=AUTH, json=release_event(project))
    assert error_of(r) == (404, "unknown_event_kind")
    assert "/v1/events/release" in r.json()["error"] and "/v1/events/pipeline" in r.json()["error"]


def test_pipeline_stage_must_be_known(api, project):
    r = api.post(
        "/v1/events/pipeline",
        headers=AUTH,
        json={"app": "a", "project": project, "pipeline": "p", "pipeline_type": "ci", "stage": "exploded"},
    )
    assert error_of(r) == (422, "invalid_field")


def test_oversized_body_is_413(api, project):
    r = api.post(
        "/v1/events/release", headers=AUTH, json={**release_event(project), "description": "x" * (70 * 1024)}
    )
    assert error_of(r) == (413, "body_too_large")

    def chunks():  # no Content-Length: the stream itself is counted
        for _ in range(80):
            yield b"x" * 1024

    r = api.post("/v1/events/release", headers={**AUTH, "Content-Type": "application/json"}, content=chunks())
    assert error_of(r) == (413, "body_too_large")


def test_no_key_or_wrong_key_is_401(api, project):
    assert error_of(api.post("/v1/events/release", json=release_event(project))) == (401, "unauthorized")
    r = api.post(
        "/v1/events/release", headers={"Authorization": "Bearer hk_nope"}, json=release_event(project)
    )
    assert error_of(r) == (401, "unauthorized")
    assert error_of(api.get("/v1/integrations")) == (401, "unauthorized")


def test_ingest_key_cannot_manage_or_post_for_another_project(api, stack: Stack, project):
    from shared.crypto import hash_api_key

    raw = "hk_ingest_" + project
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_key (id, name, key_hash, key_prefix, scopes, project) "
                "VALUES (gen_random_uuid(), 'ci', :h, 'hk_inges', '{ingest}', :p)"
            ),
            {"h": hash_api_key(raw), "p": project},
        )
    engine.dispose()
    key = {"Authorization": f"Bearer {raw}"}
    assert api.post("/v1/events/release", headers=key, json=release_event(project)).status_code == 202
    r = api.post("/v1/events/release", headers=key, json=release_event(project + "-other"))
    assert error_of(r) == (403, "forbidden")
    assert error_of(api.get("/v1/integrations", headers=key)) == (403, "forbidden")


def _ingest_key(stack: Stack, project: str) -> dict[str, str]:
    from shared.crypto import hash_api_key

    raw = "hk_ingest_" + project
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_key (id, name, key_hash, key_prefix, scopes, project) "
                "VALUES (gen_random_uuid(), 'ci', :h, 'hk_inges', '{ingest}', :p)"
            ),
            {"h": hash_api_key(raw), "p": project},
        )
    engine.dispose()
    return {"Authorization": f"Bearer {raw}"}


def test_an_ingest_key_cannot_read_another_projects_event(api, stack: Stack, project):
    """Repro (issue 10): `GET /v1/events/{id}` with an ingest key of another project answered 403, which tells
    the key holder that the event exists."""
    mine, theirs = _ingest_key(stack, project), _ingest_key(stack, project + "-b")
    event_id = api.post("/v1/events/release", headers=mine, json=release_event(project)).json()["data"][
        "event_id"
    ]
    assert api.get(f"/v1/events/{event_id}", headers=mine).status_code == 200
    r = api.get(f"/v1/events/{event_id}", headers=theirs)
    assert error_of(r) == (404, "not_found")
    assert (
        r.json()["error"]
        == api.get("/v1/events/7b0e1f7c-6a59-4c56-9a3b-6d6f0f1e2a3b", headers=theirs).json()["error"]
    )


def test_production_revokes_a_stored_development_admin_key(stack: Stack):
    """A database that ran in development keeps the public admin key's hash: production must not accept it."""
    from shared.config import DEV_ADMIN_KEY
    from shared.crypto import hash_api_key

    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_key (id, name, key_hash, key_prefix, scopes) VALUES (gen_random_uuid(), 'dev',"
                " :h, 'hk_local', '{admin}') ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL"
            ),
            {"h": hash_api_key(DEV_ADMIN_KEY)},
        )
    engine.dispose()
    dev = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
    with stack.client(env="production") as client:
        assert error_of(client.get("/v1/integrations", headers=dev)) == (401, "unauthorized")
        assert client.get("/v1/integrations", headers=AUTH).status_code == 200


def test_postgresql_down_is_503_and_nothing_acknowledged(stack: Stack, project):
    dead_db = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/herald"
    with stack.client(database_url=dead_db) as client:
        r = client.post("/v1/events/release", headers=AUTH, json=release_event(project))
        assert error_of(r) == (503, "database_unavailable")
        assert r.headers["Retry-After"]
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["data"]["checks"]["postgresql"].startswith("unreachable")


def test_a_stalled_postgresql_is_503_not_a_hang(own_stack: Stack, project):
    """Repro (issue 10): no statement_timeout/lock_timeout, so a stalled PostgreSQL (here: a lock held on the
    event table by another session) hung ingest and reads until the lock went away."""
    import threading

    engine = create_engine(own_stack.env["HERALD_DATABASE_URL"])
    answers: dict[str, tuple[int, str]] = {}
    with own_stack.client(database_lock_timeout_s=0.5, database_statement_timeout_s=2) as client:
        event_id = client.post("/v1/events/release", headers=AUTH, json=release_event(project)).json()[
            "data"
        ]["event_id"]

        def ask() -> None:
            answers["ingest"] = error_of(
                client.post("/v1/events/release", headers=AUTH, json=release_event(project))
            )
            answers["read"] = error_of(client.get(f"/v1/events/{event_id}", headers=AUTH))

        with engine.connect() as holder:
            holder.execute(text("LOCK TABLE event IN ACCESS EXCLUSIVE MODE"))
            asker = threading.Thread(target=ask)
            asker.start()
            # Generous: only a hang (a wait for the lock holder, who waits for the answers) exceeds it.
            asker.join(60)
            holder.rollback()
        asker.join(60)
    engine.dispose()
    assert answers == {"ingest": (503, "database_unavailable"), "read": (503, "database_unavailable")}


def test_readyz_and_healthz(api):
    assert api.get("/healthz").json()["data"] == {"status": "ok"}
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.json()["data"]["checks"] == {"postgresql": "ok", "redis": "ok"}


def test_unknown_event_is_404(api):
    r = api.get("/v1/events/7b0e1f7c-6a59-4c56-9a3b-6d6f0f1e2a3b", headers=AUTH)
    assert error_of(r) == (404, "not_found")
    assert error_of(api.get("/v1/events/not-a-uuid", headers=AUTH)) == (422, "invalid_field")


def test_integration_config_is_validated_encrypted_and_masked(api, stack: Stack, caplog):
    caplog.set_level(logging.DEBUG)
    secret_url = "https://hooks.example.com/services/T000/B000/s3cr3t-t0ken-value"
    bad = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={"name": "x", "provider": "webhook", "config": {"url": "ftp://nope"}},
    )
    assert error_of(bad) == (422, "invalid_config")
    assert "config.url" in bad.json()["error"]
    unknown = api.post(
        "/v1/integrations", headers=AUTH, json={"name": "x", "provider": "carrier-pigeon", "config": {}}
    )
    assert error_of(unknown) == (422, "unknown_provider")

    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={
            "name": "secretive",
            "provider": "webhook",
            "config": {
                "url": secret_url,
                "headers": {"Authorization": "Bearer tok-123456"},
                "signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            },
        },
    )
    assert r.status_code == 201
    shown = r.text + api.get(f"/v1/integrations/{r.json()['data']['id']}", headers=AUTH).text
    shown += api.get("/v1/integrations", headers=AUTH).text
    for secret in ("s3cr3t-t0ken-value", "tok-123456", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"):
        assert secret not in shown
        assert secret not in caplog.text
    assert r.json()["data"]["config"]["url"] == "https://hooks.example.com/********"
    engine = create_engine(stack.env["HERALD_DATABASE_URL"])
    with engine.connect() as conn:
        blob = conn.execute(
            text("SELECT config_ciphertext FROM integration WHERE id = :i"), {"i": r.json()["data"]["id"]}
        ).scalar_one()
    engine.dispose()
    assert b"s3cr3t" not in blob and b"tok-123456" not in blob
    assert api.delete(f"/v1/integrations/{r.json()['data']['id']}", headers=AUTH).status_code == 204


def test_route_needs_an_existing_integration(api):
    r = api.post("/v1/routes", headers=AUTH, json={"integration_id": "7b0e1f7c-6a59-4c56-9a3b-6d6f0f1e2a3b"})
    assert error_of(r) == (422, "unknown_integration")
    r = api.post("/v1/routes", headers=AUTH, json={"integration_id": "nope"})
    assert error_of(r) == (422, "invalid_field")
    r = api.post(
        "/v1/routes",
        headers=AUTH,
        json={"integration_id": "7b0e1f7c-6a59-4c56-9a3b-6d6f0f1e2a3b", "min_severity": "apocalyptic"},
    )
    assert error_of(r) == (422, "invalid_field")


def test_nul_character_is_refused_not_a_500(api, project):
    r = api.post(
        "/v1/events/release", headers=AUTH, json={**release_event(project), "description": "bad\x00byte"}
    )
    assert error_of(r) == (422, "invalid_field")


def test_keys_and_lifecycles_at_the_schema_limits_are_stored(api, project):
    """Repro (issue 10): a 128-char key was stored as `project/key` in a String(200) (229 chars at the limits)
    and a pipeline's lifecycle key reaches 512 chars in a String(255): valid events were refused with 422
    "a text field contains a character that cannot be stored"."""
    long_project = (project + "-" + "p" * 100)[:100]
    key = "k" * 128
    release = release_event(long_project, version="v" * 100)
    first = api.post("/v1/events/release", headers={**AUTH, "Idempotency-Key": key}, json=release)
    assert first.status_code == 202, first.text
    again = api.post("/v1/events/release", headers={**AUTH, "Idempotency-Key": key}, json=release)
    assert again.status_code == 202 and again.json()["data"]["duplicate"] is True
    assert again.json()["data"]["event_id"] == first.json()["data"]["event_id"]
    pipeline = {
        "app": "a" * 100,
        "project": long_project,
        "pipeline": "p" * 100,
        "pipeline_type": "cd",
        "stage": "trigger",
        "image_tag": "t" * 200,
        "op_id": "o" * 128,
    }
    r = api.post("/v1/events/pipeline", headers=AUTH, json=pipeline)
    assert r.status_code == 202, r.text


def test_idempotency_keys_of_different_projects_never_collide(api, project):
    """Repro (issue 10): keys were stored as `project/key`, so project "a" + key "b/x" and project "a/b" + key
    "x" were the same key: the second event was answered as a duplicate of the first (or a 409)."""
    first = api.post(
        "/v1/events/release", headers={**AUTH, "Idempotency-Key": "b/x"}, json=release_event(project)
    )
    second = api.post(
        "/v1/events/release", headers={**AUTH, "Idempotency-Key": "x"}, json=release_event(project + "/b")
    )
    assert first.status_code == second.status_code == 202, second.text
    assert second.json()["data"]["duplicate"] is False
    assert second.json()["data"]["event_id"] != first.json()["data"]["event_id"]


def test_a_lone_surrogate_is_refused_not_a_500(api, project):
    r = api.post(
        "/v1/events/release",
        headers={**AUTH, "Content-Type": "application/json"},
        content=b'{"type": "release.created", "project": "%s", "environment": "prod", "version": "1", '
        b'"description": "bad \\ud800 text"}' % project.encode(),
    )
    assert error_of(r) == (422, "invalid_field")


def test_the_lifecycle_lookup_of_fan_out_uses_an_index(fresh_db):
    """Repro (issue 10): `event.lifecycle_key` had no index, so fan-out's previous-message lookup scanned the
    whole event table (69 ms at 200k events, linear in retention)."""
    engine = create_engine(fresh_db)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO event (id, kind, type, project, environment, severity, payload, idempotency_key,"
                " request_hash, lifecycle_key, next_fanout_at) SELECT gen_random_uuid(), 'release',"
                " 'release.created', 'p', 'prod', 'info', '{}', 'k' || n, 'h', 'release:p:' || n, now()"
                " FROM generate_series(1, 20000) AS n"
            )
        )
        conn.execute(
            text(
                "INSERT INTO integration (id, name, provider, config_ciphertext, config_key_id)"
                " VALUES ('7b0e1f7c-6a59-4c56-9a3b-6d6f0f1e2a3b', 'i', 'webhook', '\\x00', 'k')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO delivery (id, event_id, integration_id, state, provider_ref, delivered_at)"
                " SELECT gen_random_uuid(), id, '7b0e1f7c-6a59-4c56-9a3b-6d6f0f1e2a3b', 'delivered', 'ref',"
                " now() FROM event"
            )
        )
        conn.execute(text("ANALYZE event"))
        conn.execute(text("ANALYZE delivery"))
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                text(
                    "EXPLAIN SELECT e.lifecycle_key, d.integration_id, d.provider_ref FROM delivery d"
                    " JOIN event e ON e.id = d.event_id WHERE e.lifecycle_key = ANY(:keys)"
                    " AND d.state = 'delivered'"
                ),
                {"keys": ["release:p:17", "release:p:4242"]},
            )
        )
    engine.dispose()
    assert "event_lifecycle_key_idx" in plan, plan


def test_the_fanout_publish_buffer_is_bounded_while_redis_hangs(own_stack: Stack):
    """Repro (issue 10): the API's pending-publish buffer was an unbounded queue; with Redis accepting
    connections but not answering, every request added an id that waited behind the stuck publisher."""
    import threading

    from api.enqueue import Enqueuer

    hangs = socket.socket()
    hangs.bind(("127.0.0.1", 0))
    hangs.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accept and never answer: a Redis that is up but stalled
        hangs.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(hangs.accept()[0])

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    port = hangs.getsockname()[1]
    enqueuer = Enqueuer(own_stack.settings(redis_url=f"redis://127.0.0.1:{port}/0", fanout_buffer_max_ids=50))
    try:
        for n in range(1000):
            enqueuer.fanout(f"event-{n}")
        # The publisher holds at most one batch (500) while it waits on Redis; the buffer at most 50.
        assert enqueuer.pending_ids() <= 50
        assert enqueuer.dropped_ids >= 1000 - 500 - 50
    finally:
        enqueuer.close()
        stop.set()
        acceptor.join(5)
        for conn in accepted:
            conn.close()
        hangs.close()


def test_an_event_without_deliveries_says_why(own_stack: Stack, receiver, project):
    """Repro (issue 16): an event that matched no route showed `deliveries: []` and nothing else."""
    from tests.integration.stack import create_webhook, post_release, wait_until

    with own_stack.client() as client:

        def shown(event_id: str) -> dict:
            r = client.get(f"/v1/events/{event_id}", headers=AUTH)
            assert r.status_code == 200, r.text
            return r.json()["data"]

        early = post_release(client, project)
        assert shown(early)["no_deliveries"]["code"] == "not_fanned_out"  # no worker yet
        own_stack.start_worker(concurrency=2)
        wait_until(lambda: shown(early)["fanned_out_at"] is not None, 30, "never fanned out")
        assert shown(early)["no_deliveries"]["code"] == "no_routes"

        integration_id = create_webhook(client, receiver.url("/why"), project=project)
        client.put(
            f"/v1/routes/{client.get('/v1/routes', headers=AUTH).json()['data'][0]['id']}",
            headers=AUTH,
            json={"integration_id": integration_id, "project": project, "environments": ["staging"]},
        ).raise_for_status()
        filtered = post_release(client, project, environment="production")
        wait_until(lambda: shown(filtered)["fanned_out_at"] is not None, 30, "never fanned out")
        data = shown(filtered)
        assert data["deliveries"] == []
        why = data["no_deliveries"]
        assert why["code"] == "no_route_matches"
        assert "environment 'production' not in ['staging']" in why["message"]
        assert [(r["integration_id"], r["reason"]) for r in why["routes"]] == [
            (integration_id, "environment 'production' not in ['staging']")
        ]
        delivered = post_release(client, project, environment="staging", version="1.4.3")
        wait_until(lambda: shown(delivered)["deliveries"] != [], 30, "no delivery")
        assert shown(delivered)["no_deliveries"] is None


def test_fanout_ids_accepted_on_the_loop_are_published_in_few_messages(own_stack: Stack):
    """Ids staged on the event loop within the linger go to Redis as ONE `fanout` message (FANOUT_MAX_IDS at
    most each), not one message or one publisher-thread wake-up per accepted event."""
    import asyncio
    import base64
    import json

    import redis

    from api.enqueue import FANOUT_MAX_IDS, Enqueuer
    from shared.tasknames import TASK_FANOUT

    settings = own_stack.settings()
    enqueuer = Enqueuer(settings)
    ids = [f"event-{n}" for n in range(FANOUT_MAX_IDS + 200)]

    async def accept_all() -> None:
        for event_id in ids:  # no await between them: all within one linger
            enqueuer.fanout(event_id)
        # A later timer than the linger's: the loop runs the hand-off of the last 200 ids before this resumes.
        await asyncio.sleep(settings.fanout_linger_max_s * 2)

    asyncio.run(accept_all())
    enqueuer.close()  # publishes what is staged or buffered, then joins the publisher
    client = redis.Redis.from_url(settings.redis_url)
    messages = [json.loads(raw) for raw in client.lrange(settings.queue_name, 0, -1)]
    client.close()
    assert all(m["headers"]["task"] == TASK_FANOUT for m in messages)
    batches = [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages]
    assert sorted(len(b) for b in batches) == [200, FANOUT_MAX_IDS]
    assert sorted(i for b in batches for i in b) == sorted(ids)
