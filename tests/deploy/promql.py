"""Helpers for checking our PromQL (dashboard panels, alert rules) against the metrics Herald exports.

`exposition()` imports shared.metrics in a subprocess (so the test process's registry stays untouched), gives
every metric one sample (labelled ones with a placeholder value per label), and returns the text format, as
the API's and workers' /metrics would serve it. `exported()` parses that into sample name -> label names
(counters appear as `_total` and `_created`, histograms as `_bucket`, `_sum`, `_count`).

`metric_names()`/`label_names()` pull names out of a PromQL expression with a small tokenizer: enough for the
expressions we write (no nested strings with braces), and promtool checks their syntax separately.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

_TOUCH_ALL = """
import shared.metrics as m
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase

for metric in vars(m).values():
    if not isinstance(metric, MetricWrapperBase):
        continue
    child = metric.labels(*["x" for _ in metric._labelnames]) if metric._labelnames else metric
    kind = metric._type
    if kind == "counter":
        child.inc()
    elif kind == "gauge":
        child.set(1)
    elif kind in ("histogram", "summary"):
        child.observe(0.2)
    else:
        raise SystemExit(f"unexpected metric type {kind}")
import sys
sys.stdout.write(generate_latest(REGISTRY).decode())
"""

# Labels Prometheus adds at scrape time (target labels), and the histogram bucket label.
TARGET_LABELS = frozenset({"instance", "job", "pod", "namespace", "container", "service", "endpoint"})

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
)
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$capacity_per_pod": "100",
    "$provider": ".*",
}


def exposition() -> str:
    return _exposition()


@cache
def _exposition() -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", _TOUCH_ALL],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@cache
def exported() -> dict[str, frozenset[str]]:
    """Every herald_* sample name we export -> the label names it carries."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition()):
        for sample in family.samples:
            if sample.name.startswith("herald_"):
                names.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in names.items()}


def substitute_grafana_variables(expr: str) -> str:
    for var, value in _GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def _strip(expr: str) -> tuple[str, set[str]]:
    """Remove strings, matchers, groupings and ranges; return what is left and the label names seen."""
    labels: set[str] = set()
    expr = _STRING.sub('""', expr)
    for body in _MATCHERS.findall(expr):
        labels.update(_MATCHER_LABEL.findall(body))
    expr = _MATCHERS.sub(" ", expr)
    for _, body in _GROUPING.findall(expr):
        labels.update(label.strip() for label in body.split(",") if label.strip())
    expr = _GROUPING.sub(" ", expr)
    return _RANGE.sub(" ", expr), labels


def metric_names(expr: str) -> set[str]:
    rest, _ = _strip(substitute_grafana_variables(expr))
    names = set()
    for name, call in _IDENT.findall(rest):
        if call or name in _KEYWORDS or name in ("inf", "nan", "Inf", "NaN"):
            continue
        names.add(name)
    return names


def selector_labels(expr: str) -> dict[str, set[str]]:
    """Metric name -> label names used in its own `{...}` matchers."""
    expr = _STRING.sub('""', substitute_grafana_variables(expr))
    out: dict[str, set[str]] = {}
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        out.setdefault(match.group(1), set()).update(_MATCHER_LABEL.findall(match.group(2)))
    return out


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip()
        for _, body in _GROUPING.findall(_STRING.sub('""', expr))
        for label in body.split(",")
        if label.strip()
    }


def promtool() -> str:
    """The promtool binary, installing Debian's `prometheus` package if it is missing (CI runs as root)."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("promtool is missing: apt-get install prometheus (Debian ships promtool in it)")
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", *lock, "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
        check=True,
        env=env,
        timeout=900,
    )
    found = shutil.which("promtool")
    if not found:
        raise RuntimeError("installed Debian's prometheus package, but promtool is still not on PATH")
    return found
