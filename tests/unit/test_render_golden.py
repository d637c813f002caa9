"""Golden files for every vendor format: the exact body each renderer produces for the sample events.

A change in layout shows up as a diff of tests/golden/<format>/<sample>.json. To accept an intended change:
`HERALD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render_golden.py`, then review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from providers.pagerduty import PagerDutyConfig, PagerDutyProvider
from providers.render import discord, slack, teams
from shared.rendering import RenderedMessage
from tests.golden.samples import SAMPLES, oversized

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("HERALD_UPDATE_GOLDEN") == "1"


def _pagerduty(message: RenderedMessage) -> dict[str, Any]:
    config = PagerDutyConfig.model_validate({"routing_key": "0" * 32})
    return PagerDutyProvider(http=None).preview(message, config)  # type: ignore[arg-type] (preview sends nothing)


FORMATS: dict[str, Callable[[RenderedMessage], dict[str, Any]]] = {
    "slack": slack.render,
    "discord": discord.render,
    "teams": teams.render,
    "pagerduty": _pagerduty,
}
CASES = {**SAMPLES, "oversized": oversized()}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("sample", sorted(CASES))
def test_golden(fmt: str, sample: str):
    rendered = json.dumps(FORMATS[fmt](CASES[sample]), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    path = GOLDEN / fmt / f"{sample}.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
    assert path.exists(), f"no golden file {path}; run with HERALD_UPDATE_GOLDEN=1 to create it"
    assert rendered == path.read_text(encoding="utf-8")
