"""The real Alertmanager (Debian's prometheus-alertmanager) -> Herald over HTTP -> the real worker -> fake Slack
bot and fake PagerDuty.

Alertmanager runs on free ports with clustering off and short group_wait / group_interval / repeat_interval;
alerts are posted to its v2 API. Every group is ONE Slack message (posted once, edited when a second alert
joins, edited to resolved when Alertmanager sends the resolution) and ONE PagerDuty alert (trigger ... resolve
on one dedup_key). Alertmanager's repeat of an unchanged group is answered as a duplicate: no new message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from api.app import create_app
from tests.fakes.pagerduty import PagerDutyFake
from tests.fakes.slack import CHANNEL_ID, SlackFake
from tests.integration.stack import AUTH, Stack, free_port, wait_until

pytestmark = pytest.mark.integration

BINARIES = ("alertmanager", "prometheus-alertmanager")
ROUTING_KEY = "R0UT1NGKEY00000000000000000000AM"


def alertmanager_binary() -> str | None:
    found = next((p for p in map(shutil.which, BINARIES) if p), None)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus-alertmanager"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            check=False,
            timeout=300,
        )
        found = next((p for p in map(shutil.which, BINARIES) if p), None)
    return found


@pytest.fixture(scope="module")
def live_api(stack: Stack) -> Iterator[str]:
    """The API served over real HTTP, where Alertmanager's webhook reaches it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(stack.settings()), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "uvicorn did not start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


class Alertmanager:
    def __init__(self, binary: str, workdir: Path, webhook_url: str, key: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "alertmanager.yml"
        # repeat_interval is short so the repeat of an unchanged group happens during the test.
        config.write_text(
            f"""
route:
  receiver: herald
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 3s
receivers:
  - name: herald
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
        http_config:
          authorization:
            credentials: {key}
"""
        )
        self.log = open(workdir / "alertmanager.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={self.url}",
                "--cluster.listen-address=",  # no gossip: a single instance on a shared machine
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            self._ready, 30, f"alertmanager did not become ready (log: {workdir / 'alertmanager.log'})"
        )

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "alertmanager exited"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def post_alerts(self, *alerts: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(list(alerts)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200

    def webhook_notifications(self) -> float:
        """Notifications Alertmanager delivered successfully to the webhook (its own counter)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = failed = 0.0
        for line in text.splitlines():
            if 'integration="webhook"' in line:
                if line.startswith("alertmanager_notifications_total"):
                    total += float(line.rsplit(" ", 1)[1])
                elif line.startswith("alertmanager_notifications_failed_total"):
                    failed += float(line.rsplit(" ", 1)[1])
        return total - failed

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def am_alert(
    name: str, instance: str, *, resolved: bool = False, severity: str = "critical"
) -> dict[str, Any]:
    now = datetime.now(UTC)
    alert: dict[str, Any] = {
        "labels": {"alertname": name, "instance": instance, "severity": severity},
        "annotations": {"summary": f"{name} on {instance}"},
        "generatorURL": f"http://prometheus.example:9090/graph?g0.expr={name}",
    }
    if resolved:
        alert["endsAt"] = (now - timedelta(seconds=1)).isoformat()
    return alert


def integrate(api: Any, project: str, provider: str, config: dict[str, Any]) -> None:
    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={
            "name": f"am-{provider}-{project}"[:100],
            "provider": provider,
            "project": project,
            "config": config,
        },
    )
    assert r.status_code == 201, r.text
    r = api.post(
        "/v1/routes", headers=AUTH, json={"integration_id": r.json()["data"]["id"], "project": project}
    )
    assert r.status_code == 201, r.text


def test_real_alertmanager_groups_become_one_edited_message_and_one_pagerduty_alert(
    api, live_api: str, project: str, tmp_path: Path
):
    binary = alertmanager_binary()
    if binary is None:
        pytest.skip(
            "no alertmanager binary (alertmanager / prometheus-alertmanager) and apt-get could not install it"
        )
    slot = f"am{uuid.uuid4().hex[:8]}"
    r = api.post(
        "/v1/keys", headers=AUTH, json={"name": "alertmanager", "scopes": ["ingest"], "project": project}
    )
    assert r.status_code == 201, r.text
    key = r.json()["data"]["key"]
    with SlackFake() as slack, PagerDutyFake() as pagerduty:
        integrate(
            api,
            project,
            "slack_bot",
            {"token": slack.token, "channel": CHANNEL_ID, "api_base_url": slack.api_base(slot)},
        )
        integrate(
            api, project, "pagerduty", {"routing_key": ROUTING_KEY, "events_url": pagerduty.events_url(slot)}
        )
        am = Alertmanager(binary, tmp_path, f"{live_api}/v1/events/alertmanager", key)
        try:
            _drive(am, slack, pagerduty, slot)
        finally:
            am.stop()


def _drive(am: Alertmanager, slack: SlackFake, pagerduty: PagerDutyFake, slot: str) -> None:
    post_path, update_path = f"/{slot}/api/chat.postMessage", f"/{slot}/api/chat.update"

    def texts(path: str) -> list[str]:
        return [json.dumps(json.loads(r.body)) for r in slack.requests(path)]

    # Two groups (group_by alertname): each gets its own message.
    am.post_alerts(am_alert("DiskFull", "db-1"), am_alert("HighLatency", "api-1", severity="warning"))
    posted = slack.wait_for(post_path, 2, timeout_s=60)
    assert len(posted) == 2, f"{len(posted)} of 2 group messages posted"
    disk_posts = [t for t in texts(post_path) if "DiskFull" in t]
    assert len(disk_posts) == 1 and "db-1" in disk_posts[0]

    # A second alert joins the DiskFull group: its one message is edited to show both.
    am.post_alerts(am_alert("DiskFull", "db-2"))
    wait_until(
        lambda: any("db-1" in t and "db-2" in t for t in texts(update_path)),
        60,
        "the DiskFull message was not edited to show db-2",
    )

    # Alertmanager repeats the unchanged groups every repeat_interval (3 s): wait until it delivered several
    # more notifications, then check they created no message.
    sent = am.webhook_notifications()
    wait_until(lambda: am.webhook_notifications() >= sent + 3, 60, "alertmanager did not repeat the groups")

    # The resolution: the alerts again with endsAt in the past.
    am.post_alerts(
        am_alert("DiskFull", "db-1", resolved=True),
        am_alert("DiskFull", "db-2", resolved=True),
        am_alert("HighLatency", "api-1", resolved=True, severity="warning"),
    )
    wait_until(
        lambda: sum("[RESOLVED]" in m.get("text", "") for m in slack.messages.values()) == 2,
        60,
        "both group messages were not edited to resolved",
    )
    assert len(slack.requests(post_path)) == 2, "a group got a second message"
    assert len(slack.messages) == 2

    # PagerDuty: one alert per group, triggered (again on updates) then resolved, on one dedup_key each.
    wait_until(
        lambda: len(pagerduty.alerts) == 2 and all(a.status == "resolved" for a in pagerduty.alerts),
        60,
        "the PagerDuty alerts were not resolved",
    )
    requests = [json.loads(r.body) for r in pagerduty.requests(pagerduty.enqueue_path(slot))]
    by_key: dict[str, list[str]] = {}
    for request in requests:
        by_key.setdefault(request["dedup_key"], []).append(request["event_action"])
    assert len(by_key) == 2
    for dedup_key, actions in by_key.items():
        assert dedup_key.startswith("alertmanager:")
        assert actions[0] == "trigger" and actions[-1] == "resolve" and actions.count("resolve") == 1, actions
    disk = next(a for a in pagerduty.alerts if "DiskFull" in a.summary)
    assert disk.history.count("trigger") == 2  # opened, then the join (db-2)
