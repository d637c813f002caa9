"""Render the Helm chart offline with helm-python-sdk (Helm's Go SDK through ctypes, no helm binary).

Used by tests/deploy/test_helm.py and by `make helm-lint`.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "deploy" / "helm" / "herald"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*.yaml"))
RELEASE = "rel"
NAMESPACE = "herald-ci"


@cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def load_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into a copy of `base` (as Helm merges -f files)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_text(values: dict[str, Any], *, upgrade: bool = False) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce (hooks included)."""
    return chart().render(
        values, name=RELEASE, namespace=NAMESPACE, is_install=not upgrade, is_upgrade=upgrade
    )


def render(values: dict[str, Any], *, upgrade: bool = False) -> list[dict[str, Any]]:
    """Every manifest the chart renders for `values`, parsed."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_text(values, upgrade=upgrade).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                docs.append(doc)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}: {[d['kind'] for d in docs]}"
    return found[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return dict(c)
    raise AssertionError(f"no container {name} in {deployment['metadata']['name']}")
