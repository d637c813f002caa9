"""The chart makes every Herald container log JSON lines (HERALD_LOG_FORMAT=json), for every CI values file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.helm import CHART_DIR, CI_VALUES, find, load_values, render
from tests.deploy.test_helm import DEPLOYMENTS


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_every_container_gets_log_format_json(values_file: Path) -> None:
    docs = render(load_values(CHART_DIR / "ci" / values_file.name))
    [configmap] = find(docs, "ConfigMap")
    assert configmap["data"]["HERALD_LOG_FORMAT"] == "json"
    name = configmap["metadata"]["name"]
    deployments = find(docs, "Deployment")
    assert {d["metadata"]["name"].rsplit("-", 1)[-1] for d in deployments} >= set(DEPLOYMENTS)
    for deployment in deployments:
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            refs = [e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])]
            assert name in refs, (deployment["metadata"]["name"], c["name"])
