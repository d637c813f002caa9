"""Herald's own alerts reach people through Herald: a real Prometheus scrapes the API's and a worker's /metrics,
evaluates a test copy of deploy/prometheus/alerts.yaml (every `for:` shortened to 1 s), and sends to a real
Alertmanager, whose webhook is Herald, which delivers `HeraldDeadLettersGrowing` to a fake Slack bot. The
fake vendor made to fail is a webhook answering 400 (dead at once, `invalid_payload`).

Then every PromQL expression of the Grafana dashboard (deploy/grafana/herald-dashboard.json, Grafana variables
substituted as in tests/deploy) and of the rules is run against that Prometheus and must return a series. A
rule's threshold is dropped for this (a rule that is not firing has no series by design) and `absent(x)` is
read as `x`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import substitute_grafana_variables
from tests.deploy.test_dashboard import queries
from tests.fakes.server import FakeServer, Reply
from tests.fakes.slack import CHANNEL_ID, SlackFake
from tests.integration import test_alertmanager_real as real
from tests.integration.stack import AUTH, Stack, free_port, post_release, release_event, wait_until
from tests.integration.test_alertmanager_real import Alertmanager, alertmanager_binary, integrate

pytestmark = pytest.mark.integration

live_api = real.live_api  # the API over real HTTP, for Prometheus and Alertmanager to reach

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"


class Prometheus:
    def __init__(self, binary: str, workdir: Path, targets: dict[str, str], alertmanager: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = workdir / "rules.yaml"
        # The shipped rules with every `for:` cut to 1 s, so an alert fires as soon as its condition holds.
        rules.write_text(re.sub(r"(?m)^(\s+for:\s*)\S+$", r"\g<1>1s", RULES.read_text()))
        scrapes = "\n".join(
            f"  - job_name: {job}\n    static_configs: [{{targets: ['{target}']}}]"
            for job, target in targets.items()
        )
        config = workdir / "prometheus.yml"
        config.write_text(
            f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
alerting:
  alertmanagers:
    - static_configs: [{{targets: ['{alertmanager}']}}]
scrape_configs:
{scrapes}
"""
        )
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, 60, f"prometheus did not become ready (log: {workdir / 'prometheus.log'})")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as r:
            answer = json.loads(r.read())
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def prometheus_binary() -> Iterator[str]:
    found = shutil.which("prometheus")
    if found is None and alertmanager_binary() is not None:  # the same apt-get attempt installs neither
        found = shutil.which("prometheus")
    if found is None:
        pytest.skip("no prometheus binary and apt-get could not install it")
    yield found


def test_herald_alerts_about_itself_through_itself(
    api, stack: Stack, live_api: str, receiver: FakeServer, prometheus_binary: str, tmp_path: Path
):
    am_binary = alertmanager_binary()
    if am_binary is None:
        pytest.skip("no alertmanager binary and apt-get could not install it")
    slot = f"self{uuid.uuid4().hex[:8]}"
    ops, failing = f"ops-{slot}", f"fail-{slot}"
    r = api.post(
        "/v1/keys", headers=AUTH, json={"name": "self-monitoring", "scopes": ["ingest"], "project": ops}
    )
    assert r.status_code == 201, r.text
    with SlackFake() as slack:
        integrate(
            api,
            ops,
            "slack_bot",
            {"token": slack.token, "channel": CHANNEL_ID, "api_base_url": slack.api_base(slot)},
        )
        am = Alertmanager(am_binary, tmp_path, f"{live_api}/v1/events/alertmanager", r.json()["data"]["key"])
        prometheus = None
        try:
            api_target = live_api.removeprefix("http://")
            worker_target = f"127.0.0.1:{stack.worker_metrics_port}"
            prometheus = Prometheus(
                prometheus_binary,
                tmp_path,
                {"herald-api": api_target, "herald-worker": worker_target},
                f"127.0.0.1:{am.port}",
            )
            _fail_deliveries(api, prometheus, receiver, failing)
            _refuse_one_event(stack, failing)
            wait_until(
                lambda: any(
                    "HeraldDeadLettersGrowing" in r.body.decode()
                    for r in slack.requests(f"/{slot}/api/chat.postMessage")
                ),
                120,
                "HeraldDeadLettersGrowing did not reach the fake Slack through Alertmanager and Herald",
            )
            _every_dashboard_and_rule_query_returns_a_series(prometheus)
        finally:
            if prometheus is not None:
                prometheus.stop()
            am.stop()


def _fail_deliveries(api: Any, prometheus: Prometheus, receiver: FakeServer, project: str) -> None:
    """More than 10 dead-lettered webhook deliveries, after Prometheus has seen the dead counter exist (an
    increase() needs a sample before the jump), plus one retried-then-delivered one for the retry panels."""
    dead_path, flaky_path = f"/dead/{project}", f"/flaky/{project}"
    receiver.script(dead_path, *[Reply(400, b"bad")] * 20)
    receiver.script(flaky_path, Reply(503, b"busy"))
    _webhook(api, receiver.url(dead_path), project, retry_max_retries=0)
    _webhook(api, receiver.url(flaky_path), project + "-flaky", retry_base_delay_s=0.5)
    post_release(api, project + "-flaky", version="0.0.1")
    post_release(api, project, version="1.0.0")
    receiver.wait_for(dead_path, 1, timeout_s=60)
    dead = 'herald_deliveries_total{outcome="dead", provider="webhook"}'
    wait_until(lambda: bool(prometheus.query(dead)), 60, "prometheus never scraped a dead delivery")
    for n in range(15):
        post_release(api, project, version=f"1.0.{n + 1}")
    receiver.wait_for(dead_path, 16, timeout_s=120)
    receiver.wait_for(flaky_path, 2, timeout_s=60)


def _refuse_one_event(stack: Stack, project: str) -> None:
    """One submission answered 503 (PostgreSQL unreachable), by an API in this process whose metrics the
    served API exports too, so HeraldEventsRefused's `status_code="503"` series exists."""
    with stack.client(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none") as down:
        r = post_release_raw(down, project)
        assert r.status_code == 503, r.text


def post_release_raw(client: Any, project: str) -> Any:
    return client.post("/v1/events/release", headers=AUTH, json=release_event(project))


def _webhook(api: Any, url: str, project: str, **retry: Any) -> None:
    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={
            "name": f"hook-{project}"[:100],
            "provider": "webhook",
            "project": project,
            "config": {"url": url},
            **retry,
        },
    )
    assert r.status_code == 201, r.text
    r = api.post(
        "/v1/routes", headers=AUTH, json={"integration_id": r.json()["data"]["id"], "project": project}
    )
    assert r.status_code == 201, r.text


#: a rule's threshold (`> 10`, `< 0.95`, `== 0`): dropped, so the expression shows its series while nothing fires
_THRESHOLD = re.compile(r"\s*(?:>=|<=|==|!=|>|<)\s*[0-9.]+(?![0-9.\w])")
_ABSENT = re.compile(r"^\s*absent\((.*)\)\s*$", re.DOTALL)


def rule_query(expr: str) -> str:
    """A rule's expression as a query that has a series whenever its inputs do: thresholds dropped, and
    `absent(x)` (empty exactly when x exists) read as x."""
    stripped = _THRESHOLD.sub("", expr)
    absent = _ABSENT.match(stripped)
    return absent.group(1) if absent else stripped


def test_rule_query_drops_thresholds_and_reads_absent_as_its_argument():
    assert rule_query("sum(x) > 10") == "sum(x)"
    assert rule_query("(a / b) < 0.95\nand\nsum(c[30m]) > 20") == "(a / b)\nand\nsum(c[30m])"
    assert rule_query("absent(herald_worker_inflight)") == "herald_worker_inflight"
    assert (
        rule_query("(sum(rate(d[10m])) or on () vector(0)) == 0") == "(sum(rate(d[10m])) or on () vector(0))"
    )


#: rules whose expression needs more history than a test has: checked on their inputs instead. The
#: backlog rule's `deriv(...[15m:1m])` subquery has a point per minute boundary and needs two.
NEEDS_HISTORY = {"HeraldOutboxBacklogGrowing": "max(herald_outbox_backlog)"}


def shipped_rules() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(r["alert"], r["expr"]) for g in groups for r in g["rules"]]


def _every_dashboard_and_rule_query_returns_a_series(prometheus: Prometheus) -> None:
    checks = [(f"panel {t}", substitute_grafana_variables(e)) for t, e in queries()]
    checks += [(f"rule {name}", rule_query(e)) for name, e in shipped_rules() if name not in NEEDS_HISTORY]
    checks += [(f"rule {name} (inputs)", expr) for name, expr in NEEDS_HISTORY.items()]
    assert len(checks) > 30
    empty: list[str] = []

    def all_answer() -> bool:
        empty[:] = [f"{what}: {expr}" for what, expr in checks if not prometheus.query(expr)]
        return not empty

    try:
        wait_until(all_answer, 60, "dashboard or rule queries without a series")
    except AssertionError:
        raise AssertionError("queries without a series:\n" + "\n".join(empty)) from None
