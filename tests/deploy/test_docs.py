"""docs/operations.md documents every HERALD_* setting, with the default shared/config.py really has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from shared.config import Settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
ROW = re.compile(r"^\| `(HERALD_[A-Z0-9_]+)` \| ([^|]+) \| ([^|]+) \|$", re.M)


def documented() -> dict[str, tuple[str, str]]:
    return {
        name: (default.strip(), meaning.strip())
        for name, default, meaning in ROW.findall(OPERATIONS.read_text())
    }


def default_of(field: Any) -> Any:
    return field.default_factory() if field.default_factory is not None else field.default


def test_every_setting_is_documented() -> None:
    docs = documented()
    settings = {f"HERALD_{name.upper()}" for name in Settings.model_fields}
    missing = sorted(settings - set(docs))
    assert not missing, f"add these to the configuration reference in docs/operations.md: {missing}"
    # `make run` reads a few variables of its own (HERALD_PORT): documented beside the settings, never in them.
    scripts = set(re.findall(r"\b(HERALD_[A-Z0-9_]+)", "".join(p.read_text() for p in SCRIPTS.glob("*.sh"))))
    stale = sorted(set(docs) - settings - scripts)
    assert not stale, f"docs/operations.md documents settings that no longer exist: {stale}"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_documented_default_is_the_real_one(name: str) -> None:
    variable = f"HERALD_{name.upper()}"
    if variable not in documented():
        pytest.fail(f"{variable} is not documented")
    doc_default, meaning = documented()[variable]
    assert meaning, f"{variable}: no meaning given"
    real = default_of(Settings.model_fields[name])
    if isinstance(real, SecretStr):
        assert "**Secret.**" in meaning, f"{variable}: mark secret settings as **Secret.**"
        return
    text = doc_default.strip("`")
    if real is None:
        assert text == "unset", f"{variable}: default is unset, docs say {doc_default}"
    elif isinstance(real, list):
        assert text == ("empty" if not real else ",".join(real))
    elif isinstance(real, bool):
        assert text == str(real).lower()
    elif isinstance(real, int | float):
        assert float(text) == float(real), f"{variable}: default is {real}, docs say {doc_default}"
    else:
        assert text == str(real), f"{variable}: default is {real!r}, docs say {doc_default}"
