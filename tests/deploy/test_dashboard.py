"""deploy/grafana/herald-dashboard.json: well formed, every query valid PromQL (promtool), and every metric and
label it names is one Herald exports."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import (
    TARGET_LABELS,
    exported,
    grouping_labels,
    metric_names,
    promtool,
    selector_labels,
    substitute_grafana_variables,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "herald-dashboard.json"


@cache
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in panels() for t in p.get("targets", [])]


def test_dashboard_is_well_formed() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel.get("description"), f"{panel['title']} has no description"
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "provider"} <= variables


def test_every_metric_in_every_panel_is_exported() -> None:
    ours = exported()
    assert ours, "the exposition has no herald_* samples"
    seen: set[str] = set()
    for title, expr in queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric found in {expr!r}"
        assert names <= set(ours), f"panel {title!r} queries {sorted(names - set(ours))}: not exported"
        for name, labels in selector_labels(expr).items():
            assert labels <= ours[name] | TARGET_LABELS, (
                f"{title}: {name} has no label {sorted(labels - ours[name])}"
            )
        known = set().union(*(ours[n] for n in names)) | TARGET_LABELS
        assert grouping_labels(expr) <= known, f"{title}: groups by a label its metrics do not have"
        seen |= names
    # The variable query too.
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert metric_names(variable["definition"].split("(", 1)[1].split(",")[0]) <= set(ours)


def test_the_checker_catches_a_wrong_name() -> None:
    ours = set(exported())
    assert not metric_names('sum(rate(herald_deliveries{outcome="dead"}[5m]))') <= ours  # missing _total
    assert not metric_names("histogram_quantile(0.9, rate(herald_attempt_duration_seconds[5m]))") <= ours
    assert metric_names("sum by (le) (rate(herald_attempt_duration_seconds_bucket[$__rate_interval]))") == {
        "herald_attempt_duration_seconds_bucket"
    }


@pytest.mark.parametrize(
    ("topic", "needle"),
    [
        ("delivery rate per provider", "sum by (provider, outcome) (rate(herald_deliveries_total"),
        ("success ratio per provider", 'outcome=~"delivered|dead"'),
        (
            "attempt latency percentiles",
            "histogram_quantile(0.95, sum by (le, provider) (rate(herald_attempt_duration_seconds_bucket",
        ),
        ("end-to-end latency", "herald_delivery_latency_seconds_bucket"),
        ("retries by attempt", "sum by (attempt) (rate(herald_retries_total"),
        ("dead-letter size", "herald_dead_letters"),
        ("dead-letter inflow", 'outcome="dead"'),
        ("queue depth", "herald_queue_depth"),
        ("queue age", "herald_queue_oldest_age_seconds"),
        ("outbox", "herald_outbox_backlog"),
        ("worker saturation", "herald_worker_inflight) / $capacity_per_pod"),
    ],
)
def test_dashboard_covers(topic: str, needle: str) -> None:
    assert any(needle in expr for _, expr in queries()), f"no panel shows {topic}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (Grafana variables substituted) as a recording rule."""
    rules = [
        {"record": f"herald:dashboard_query_{i}", "expr": substitute_grafana_variables(expr)}
        for i, (_, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
