"""The `herald` CLI through Typer's runner against a live API (uvicorn on a free port, on the test stack's
database, worker and Redis), plus `keys rotate-encryption` against a database of its own."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from typer.testing import CliRunner

from api.app import create_app
from api.cli import cli
from shared.crypto import KeyRing, generate_key_spec
from tests.fakes.server import FakeServer, Reply
from tests.fakes.slack import SlackFake
from tests.integration.stack import (
    ADMIN_KEY,
    AUTH,
    ROOT,
    Stack,
    create_webhook,
    post_release,
    wait_for_deliveries,
)
from tests.integration.test_management import sql, wait_delivery

pytestmark = pytest.mark.integration

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_api(stack: Stack) -> Iterator[str]:
    """The API served over real HTTP. Bulk dead-letter work goes to the background from 3 rows on."""
    port = free_port()
    app = create_app(stack.settings(dlq_inline_limit=2))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def herald(live_api: str, *args: str, key: str = ADMIN_KEY, **env: str):
    env = {"HERALD_API_URL": live_api, "HERALD_API_KEY": key, "COLUMNS": "250", **env}
    return runner.invoke(cli, list(args), env=env)


def test_keys_create_list_revoke(live_api):
    r = herald(live_api, "keys", "create", "cli-reader", "--scope", "read", "--json")
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    assert created["key"].startswith("hk_") and created["scopes"] == ["read"]

    r = herald(live_api, "keys", "list")
    assert r.exit_code == 0 and "cli-reader" in r.stdout and created["key"] not in r.stdout
    r = herald(live_api, "keys", "list", "--json")
    assert created["id"] in {k["id"] for k in json.loads(r.stdout)}

    # The reader key lists but cannot create: the API's 403 becomes exit code 1 with its error code.
    assert herald(live_api, "keys", "list", key=created["key"]).exit_code == 0
    r = herald(live_api, "keys", "create", "x", "--scope", "admin", key=created["key"])
    assert r.exit_code == 1 and "forbidden" in r.output

    assert herald(live_api, "keys", "revoke", created["id"]).exit_code == 0
    r = herald(live_api, "keys", "list", key=created["key"])
    assert r.exit_code == 1 and "unauthorized" in r.output
    r = herald(live_api, "keys", "create", "bad", "--scope", "root")
    assert r.exit_code == 1 and "invalid_field" in r.output


def test_integrations_list_and_test_then_deliveries_show(
    live_api, api, receiver: FakeServer, hook_path, project
):
    integration_id = create_webhook(api, receiver.url(hook_path), project=project)
    r = herald(live_api, "integrations", "list", "--project", project)
    assert r.exit_code == 0 and integration_id in r.stdout and "webhook" in r.stdout

    r = herald(live_api, "integrations", "test", integration_id, "--json")
    assert r.exit_code == 0, r.output
    delivery = json.loads(r.stdout)
    assert delivery["state"] == "delivered"
    assert json.loads(receiver.requests(hook_path)[0].body)["message"]["title"].startswith("[TEST]")

    r = herald(live_api, "deliveries", "show", delivery["id"])
    assert r.exit_code == 0 and "delivered" in r.stdout and "200" in r.stdout
    r = herald(live_api, "deliveries", "list", integration_id, "--json")
    assert [d["id"] for d in json.loads(r.stdout)["items"]] == [delivery["id"]]

    receiver.script(hook_path, Reply(404, b"gone"))
    r = herald(live_api, "integrations", "test", integration_id)
    assert r.exit_code == 1 and "dead" in r.output

    r = herald(live_api, "deliveries", "show", "00000000-0000-0000-0000-000000000000")
    assert r.exit_code == 1 and "not_found" in r.output


def test_dlq_list_redrive_with_progress_and_purge(live_api, api, receiver: FakeServer, project):
    path = f"/cli-dlq/{project}"
    receiver.script(path, *[Reply(400, b"bad")] * 4)
    create_webhook(api, receiver.url(path), project=project)
    dead = [wait_for_deliveries(api, post_release(api, project, version=f"9.{n}"))[0] for n in range(4)]
    assert {d["state"] for d in dead} == {"dead"}

    r = herald(live_api, "dlq", "list", "--project", project)
    assert r.exit_code == 0 and "invalid_payload" in r.stdout and "4" in r.stdout
    r = herald(live_api, "dlq", "list", "--project", project, "--json")
    assert json.loads(r.stdout)["counts_by_reason"] == {"invalid_payload": 4}
    for provider, total in (("webhook", 4), ("slack", 0)):
        r = herald(live_api, "dlq", "list", "--project", project, "--provider", provider, "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["total"] == total, r.output

    # One by id (inline), then the other three as a background job followed by a progress bar.
    r = herald(live_api, "dlq", "redrive", "--id", dead[0]["id"], "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["processed"] == 1
    r = herald(live_api, "dlq", "redrive", "--project", project)
    assert r.exit_code == 0, r.output
    assert "re-queued 3 of 3" in r.stdout and "redrive" in r.stderr  # the progress bar draws on stderr
    for d in dead:
        assert wait_delivery(api, d["id"])["state"] == "delivered"

    receiver.script(path, Reply(400, b"bad"))
    [again] = wait_for_deliveries(api, post_release(api, project, version="10.0"))
    r = herald(live_api, "dlq", "purge", "--project", project, "--yes", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["processed"] == 1
    r = herald(live_api, "dlq", "purge", "--yes")
    assert r.exit_code == 1 and "empty_selection" in r.output
    r = herald(live_api, "dlq", "purge", "--project", project, input="n\n")
    assert r.exit_code == 1
    assert api.get(f"/v1/deliveries/{again['id']}", headers=AUTH).status_code == 404


def test_routes_explain_file(live_api, api, receiver: FakeServer, tmp_path, project):
    create_webhook(api, receiver.url(f"/explain-cli/{project}"), project=project)
    sample = tmp_path / "event.json"
    sample.write_text(
        json.dumps({"type": "release.created", "project": project, "environment": "prod", "version": "5.0"})
    )
    r = herald(live_api, "routes", "explain", str(sample))
    assert r.exit_code == 0, r.output
    assert "release.created" in r.stdout and "would receive" in r.stdout and "5.0" in r.stdout
    r = herald(live_api, "routes", "explain", str(sample), "--json")
    assert any(x["matched"] and x["preview"] for x in json.loads(r.stdout)["routes"])

    sample.write_text("{not json")
    r = herald(live_api, "routes", "explain", str(sample))
    assert r.exit_code == 2 and "not JSON" in r.output
    sample.write_text(json.dumps({"app": "x"}))
    r = herald(live_api, "routes", "explain", str(sample))
    assert r.exit_code == 1 and "invalid_event" in r.output


def test_unreachable_api_and_missing_key_are_clear_errors(live_api):
    r = herald("http://127.0.0.1:9", "keys", "list")
    assert r.exit_code == 3 and "cannot reach the Herald API" in r.output
    r = runner.invoke(cli, ["keys", "list"], env={"HERALD_API_URL": live_api, "HERALD_API_KEY": ""})
    assert r.exit_code == 3 and "no API key" in r.output


def test_keys_rotate_encryption(own_stack: Stack):
    old_spec = own_stack.env["HERALD_ENCRYPTION_KEYS"]
    with own_stack.client() as api:
        ids = [
            create_webhook(api, f"https://hooks.example/{n}?token=rot-s3cret", catch_all=True)
            for n in range(3)
        ]
    new_spec = generate_key_spec("t2")
    env = {
        "HERALD_DATABASE_URL": own_stack.env["HERALD_DATABASE_URL"],
        "HERALD_ENCRYPTION_KEYS": f"{new_spec},{old_spec}",
    }
    r = runner.invoke(cli, ["keys", "rotate-encryption", "--batch-size", "2", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"primary_key_id": "t2", "rotated": 3, "unreadable": []}
    rows = sql(own_stack, "SELECT id, config_key_id, config_ciphertext FROM integration")
    assert {str(i) for i, _, _ in rows} == set(ids)
    assert {(kid, KeyRing.key_id_of(bytes(blob))) for _, kid, blob in rows} == {("t2", "t2")}
    # The old key can now go: the API reads every config with the new key alone.
    with own_stack.client(encryption_keys=new_spec) as api:
        for integration_id in ids:
            config = api.get(f"/v1/integrations/{integration_id}", headers=AUTH).json()["data"]["config"]
            assert config["url"] == "https://hooks.example/********"
    again = runner.invoke(cli, ["keys", "rotate-encryption"], env=env)
    assert again.exit_code == 0 and "re-encrypted 0" in again.stdout
    # A key ring that cannot read the rows reports them and exits non-zero, changing nothing.
    stranger = {**env, "HERALD_ENCRYPTION_KEYS": generate_key_spec("t3")}
    r = runner.invoke(cli, ["keys", "rotate-encryption", "--json"], env=stranger)
    assert r.exit_code == 1 and len(json.loads(r.stdout)["unreadable"]) == 3
    assert "rot-s3cret" not in r.output


# issue 16: the first hour of a new user


def _on_one_line(output: str, value: str) -> bool:
    return any(value in line for line in output.splitlines())


def test_ids_never_fold_at_80_and_120_columns(live_api, api, receiver: FakeServer, project):
    """Before: Rich folded every column, so a 36-character id broke over two lines at 80 and 120 columns and
    could not be copied (`overflow="fold"`)."""
    path = f"/cli-narrow/{project}"
    receiver.script(path, Reply(400, b"bad"))
    integration_id = create_webhook(api, receiver.url(path), project=project)
    [dead] = wait_for_deliveries(api, post_release(api, project))
    key_id = json.loads(
        herald(live_api, "keys", "create", f"narrow-{project}", "--scope", "read", "--json").stdout
    )["id"]
    commands = [
        (["integrations", "list", "--project", project], integration_id),
        (["deliveries", "list", integration_id], dead["id"]),
        (["dlq", "list", "--project", project], dead["id"]),
        (["keys", "list"], key_id),
    ]
    for columns in ("80", "120"):
        for args, full_id in commands:
            r = herald(live_api, *args, COLUMNS=columns)
            assert r.exit_code == 0, r.output
            assert _on_one_line(r.stdout, full_id), (columns, args, r.stdout)
            assert max(len(line) for line in r.stdout.splitlines()) <= int(columns), (columns, args, r.stdout)


def test_the_cause_and_the_next_attempt_are_shown(live_api, api, project):
    """Before: `deliveries show|list` and `dlq list` showed `provider_unavailable` but neither the cause
    (`connection failed: ...`) nor when the next attempt is due."""
    # A host that does not resolve, retried in 3600 s x 0.02 (the tests' time scale) = 72 s: still retrying
    # while the CLI looks at it.
    retrying_id = create_webhook(
        api, "http://no-such-host.invalid/hook", project=project, route_project=project
    )
    assert api.patch(
        f"/v1/integrations/{retrying_id}", headers=AUTH, json={"retry_base_delay_s": 3600}
    ).status_code in (200, 202)
    [delivery] = wait_for_deliveries(api, post_release(api, project), states={"retrying"})
    assert delivery["last_error_detail"] and delivery["next_attempt_at"]

    r = herald(live_api, "deliveries", "show", delivery["id"])
    assert r.exit_code == 0, r.output
    assert f"cause: {delivery['last_error_class']}: {delivery['last_error_detail']}" in r.stdout
    assert re.search(r"next attempt: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in \d+ s\)", r.stdout), r.stdout
    r = herald(live_api, "deliveries", "list", retrying_id)
    assert r.exit_code == 0 and delivery["last_error_detail"] in r.stdout and "(in " in r.stdout, r.stdout

    # Out of retries at once: a dead letter whose cause is the same connection failure.
    dead_project = f"{project}-dead"
    dead_id = create_webhook(api, "http://no-such-host.invalid/dead", project=dead_project)
    assert api.patch(
        f"/v1/integrations/{dead_id}", headers=AUTH, json={"retry_max_retries": 0}
    ).status_code in (200, 202)
    [dead] = wait_for_deliveries(api, post_release(api, dead_project))
    assert dead["state"] == "dead" and dead["last_error_detail"]
    r = herald(live_api, "dlq", "list", "--project", dead_project)
    # The table shortens a long cause; the failure itself (the unknown host) stays in view.
    assert r.exit_code == 0 and "connection failed: no-such-host.invalid" in r.stdout, r.stdout


def test_integrations_list_shows_recent_outcomes(live_api, api, receiver: FakeServer, project):
    """Before: an integration whose every delivery died was listed as `ok` and nothing else. The counts come
    from the API's `recent_outcomes` (issue 16, interface 3); the table shows them whenever the API sends them."""
    path = f"/cli-outcomes/{project}"
    receiver.script(path, Reply(400, b"bad"), Reply(400, b"bad"))
    integration_id = create_webhook(api, receiver.url(path), project=project)
    for n in range(2):
        wait_for_deliveries(api, post_release(api, project, version=f"3.{n}"))
    [listed] = json.loads(herald(live_api, "integrations", "list", "--project", project, "--json").stdout)
    r = herald(live_api, "integrations", "list", "--project", project)
    assert r.exit_code == 0 and integration_id in r.stdout
    if "recent_outcomes" in listed:
        assert listed["recent_outcomes"]["dead"] == 2
        assert "0 delivered, 0 retrying, 2 dead" in r.stdout
        assert "last 1d" in r.stdout


def test_errors_name_the_cli_flags(live_api):
    """Before: `herald dlq redrive` said "give ids or at least one filter (integration_id, ...), or all=true"."""
    r = herald(live_api, "dlq", "redrive")
    assert r.exit_code == 1 and "empty_selection" in r.output
    assert "--all" in r.output and "--integration" in r.output and "--id" in r.output
    assert "all=true" not in r.output and "integration_id" not in r.output
    r = herald(live_api, "dlq", "list", "--integration", "not-a-uuid")
    assert r.exit_code == 1 and "--integration" in r.output and "integration_id" not in r.output
    r = herald(live_api, "keys", "create", "bad", "--scope", "root")
    assert r.exit_code == 1 and "--scope" in r.output and "scopes" not in r.output


def test_keys_create_labels_the_secret_and_prints_it_once(live_api):
    """Before: "created key <id> (...)" and the key on the next line: users took the id for the key."""
    r = herald(live_api, "keys", "create", "labelled", "--scope", "read")
    assert r.exit_code == 0, r.output
    [secret] = re.findall(r"^API key \(shown once\): (hk_\S+)$", r.stdout, re.M)
    [key_id] = re.findall(r"^id: (\S+)$", r.stdout, re.M)
    assert r.output.count(secret) == 1
    listed = json.loads(herald(live_api, "keys", "list", "--json").stdout)
    assert key_id in {k["id"] for k in listed} and herald(live_api, "keys", "list", key=secret).exit_code == 0


def test_help_shows_no_bool_after_flags():
    """Before: `herald dlq redrive --help` listed `--all <bool>`, `--json <bool>`, `--help <bool>`."""
    commands = [[]]
    for group in ("db", "keys", "integrations", "deliveries", "dlq", "routes"):
        r = runner.invoke(cli, [group, "--help"], env={"COLUMNS": "200"})
        names = re.findall(r"^│ (\S+) ", r.stdout.split("Commands")[-1], re.M)
        commands += [[group], *([group, n] for n in names)]
    commands.append(["gen-encryption-key"])
    assert ["dlq", "redrive"] in commands and ["keys", "list"] in commands
    for args in commands:
        r = runner.invoke(cli, [*args, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, (args, r.output)
        assert "<bool>" not in r.stdout, (args, r.stdout)
    assert (
        "--state skipped" in runner.invoke(cli, ["dlq", "redrive", "--help"], env={"COLUMNS": "200"}).stdout
    )


def test_an_empty_dlq_list_prints_one_line(live_api, project):
    """Before: "no dead letters by reason" and "no dead letters"."""
    r = herald(live_api, "dlq", "list", "--project", project)
    assert r.exit_code == 0 and r.stdout.strip() == "no dead letters"


def test_a_redriven_delivery_shows_which_budget_an_attempt_used(live_api, api, receiver: FakeServer, project):
    """Before: the attempts made before a redrive showed `budget -1`."""
    path = f"/cli-budget/{project}"
    receiver.script(path, Reply(400, b"bad"))
    create_webhook(api, receiver.url(path), project=project)
    [dead] = wait_for_deliveries(api, post_release(api, project))
    assert herald(live_api, "dlq", "redrive", "--id", dead["id"]).exit_code == 0
    assert wait_delivery(api, dead["id"])["state"] == "delivered"
    r = herald(live_api, "deliveries", "show", dead["id"])
    assert r.exit_code == 0 and "previous" in r.stdout and "current" in r.stdout
    assert not re.search(r"\s-1\s", r.stdout), r.stdout


def _readme_tour() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Five minutes to a Slack channel", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_tour_runs_as_typed_and_again(live_api, tmp_path):
    """Before: the tour's fixed `Idempotency-Key: ios-2.4.0-prod` made a second run a silent duplicate (the old
    event id, nothing delivered), and its `herald` was not on the PATH after `make run`. The tour runs here as
    written, twice, against the live API; only the API address (HERALD_API_URL for the CLI), the admin key, the Slack URL (a local fake) and
    `.venv/bin/herald` (the console script pyproject installs, replaced by a shim to this checkout) differ."""
    assert 'herald = "api.cli:main"' in (ROOT / "pyproject.toml").read_text()
    tour = _readme_tour()
    assert ".venv/bin/herald" in tour and "$(date +%s)" in tour
    shim = tmp_path / "herald"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'from api.cli import main; main()' \"$@\"\n")
    shim.chmod(0o755)
    with SlackFake() as slack:
        script = (
            tour.replace("localhost:8000", live_api.removeprefix("http://"))
            .replace("hk_local_dev_admin_key", ADMIN_KEY)
            .replace("https://hooks.slack.com/services/T/B/x", slack.webhook_url("tour"))
            .replace(".venv/bin/herald", str(shim))
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HERALD_API_URL": live_api}
        events = []
        for run in range(2):
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
            assert done.returncode == 0, f"run {run}:\n{done.stdout}\n{done.stderr}"
            # Step 2 prints the route, step 4 the event (one JSON document each), then the deliveries table.
            printed = [json.loads(line)["data"] for line in done.stdout.splitlines() if line.startswith("{")]
            events += [data for data in printed if "deliveries" in data]
        assert len(events) == 2 and events[0]["id"] != events[1]["id"]
        # The second run added a second integration and route to the same channel: its event arrives twice.
        assert len(slack.wait_for(slack.webhook_path("tour"), 3)) == 3


def test_integrations_show_and_list_show_the_circuit(live_api, api, receiver: FakeServer, project):
    """Before: `herald integrations show` did not exist and the list had no circuit (issue 12)."""
    path = f"/cli-circuit/{project}"
    receiver.script(path, Reply(401, b"revoked"))
    integration_id = create_webhook(api, receiver.url(path), project=project)
    wait_for_deliveries(api, post_release(api, project))
    r = herald(live_api, "integrations", "show", integration_id)
    assert r.exit_code == 0, r.output
    assert re.search(r"circuit\s+│?\s*open", r.stdout), r.stdout
    assert "auth_failed" in r.stdout and "next probe" in r.stdout
    shown = json.loads(herald(live_api, "integrations", "show", integration_id, "--json").stdout)
    assert shown["circuit"]["state"] in ("open", "half_open") and shown["circuit"]["reason"].startswith(
        "auth_failed"
    )
    r = herald(live_api, "integrations", "list", "--project", project, COLUMNS="200")
    assert r.exit_code == 0 and ("open since" in r.stdout or "half_open since" in r.stdout), r.stdout
