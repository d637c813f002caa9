"""deploy/prometheus/alerts.yaml: promtool accepts it, its unit tests pass, it only queries metrics we export,
and promtool accepts the exposition our metric definitions produce."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import (
    TARGET_LABELS,
    exported,
    exposition,
    grouping_labels,
    metric_names,
    promtool,
    selector_labels,
)

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"


@pytest.fixture(scope="module")
def promtool_bin() -> str:
    return promtool()


@cache
def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules(promtool_bin: str) -> None:
    done = run([promtool_bin, "check", "rules", str(ALERTS)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_alert_unit_tests(promtool_bin: str) -> None:
    """Each alert fires on the synthetic series it is meant for, with the expected text, and stays quiet on a
    healthy system (deploy/prometheus/alerts.test.yaml)."""
    done = run([promtool_bin, "test", "rules", str(ALERT_TESTS)])
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert tested == {rule["alert"] for rule in rules()}, "every alert has a unit test"


def test_promtool_accepts_our_exposition(promtool_bin: str) -> None:
    text = exposition()
    assert "herald_deliveries_total{" in text
    done = run([promtool_bin, "check", "metrics"], stdin=text)
    # promtool prints lint problems (naming, units, missing help) and exits non-zero on any.
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


def test_promtool_check_metrics_can_fail(promtool_bin: str) -> None:
    """A badly named counter is reported, so the test above would catch one of ours."""
    bad = "# HELP herald_things A counter without _total.\n# TYPE herald_things counter\nherald_things 1\n"
    assert run([promtool_bin, "check", "metrics"], stdin=bad).returncode != 0


def test_the_required_alerts_exist() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    needed = {
        "HeraldDeadLettersGrowing": "herald_deliveries_total",
        "HeraldDeliverySuccessRatioLow": "herald_deliveries_total",
        "HeraldQueueAgeHigh": "herald_queue_oldest_age_seconds",
        "HeraldNoWorkerConsuming": "herald_queue_depth",
        "HeraldOutboxBacklogGrowing": "herald_outbox_backlog",
    }
    for alert, metric in needed.items():
        assert metric in by_name[alert]["expr"]
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


def test_alerts_query_only_metrics_we_export() -> None:
    ours = exported()
    for rule in rules():
        expr = rule["expr"]
        names = metric_names(expr)
        assert names, f"{rule['alert']}: no metric found in {expr!r}"
        assert names <= set(ours), f"{rule['alert']} queries {sorted(names - set(ours))}, not exported"
        for name, labels in selector_labels(expr).items():
            assert labels <= ours[name] | TARGET_LABELS, (
                f"{rule['alert']}: {name} has no label {labels - ours[name]}"
            )
        known = set().union(*(ours[n] for n in names)) | TARGET_LABELS
        assert grouping_labels(expr) <= known, f"{rule['alert']}: grouping by an unknown label"


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_runbook_links_point_at_sections_of_the_operations_guide() -> None:
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), flags=re.M)}
    for rule in rules():
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "docs/operations.md"
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in docs/operations.md"
