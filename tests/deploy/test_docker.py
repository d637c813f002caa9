"""deploy/Dockerfile and deploy/docker-compose.yml, checked statically (no Docker engine on the build machines;
tests/deploy/test_entrypoint.py runs the image's commands for real)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
COMMANDS = {"api", "worker", "beat", "migrate"}


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "runAsNonRoot needs a numeric, non-root uid"


def test_exec_form_entrypoint_under_tini() -> None:
    stage = dict(final_stage())
    entrypoint = json.loads(stage["ENTRYPOINT"])  # exec form: a JSON array, no shell in between
    assert entrypoint[0].endswith("/tini") and entrypoint[1] == "--"
    assert "-g" not in entrypoint, "tini -g would signal prefork children directly"
    assert entrypoint[2] == "/usr/local/bin/herald-entrypoint"
    assert json.loads(stage["CMD"]) == ["api"]


def test_base_image_matches_the_python_we_test_with() -> None:
    bases = [rest.split()[0] for word, rest in instructions() if word == "FROM"]
    expected = f"python:{sys.version_info.major}.{sys.version_info.minor}-"
    assert bases and all(base.startswith(expected) for base in bases), bases


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics, enough for ours: the last matching pattern wins, `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            result = not negate
    return result


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [rest for word, rest in instructions() if word == "COPY" and "--from=" not in rest]
    assert copies
    for rest in copies:
        sources = [part for part in rest.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
            assert not ignored(source.rstrip("/"), patterns), (
                f"COPY {source} is excluded by the .dockerignore"
            )


def test_entrypoint_is_valid_posix_shell() -> None:
    shell = shutil.which("dash") or "/bin/sh"  # Debian's /bin/sh, the image's
    done = subprocess.run([shell, "-n", str(ENTRYPOINT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    text = ENTRYPOINT.read_text()
    for command in COMMANDS | {"worker-alive"}:
        assert re.search(rf"^\s*{re.escape(command)}\)", text, re.M), (
            f"the entrypoint has no `{command}` command"
        )
    # Every server is exec'd, so it is tini's direct child and gets SIGTERM itself.
    for server in (
        "uvicorn",
        "celery -A workers.app worker",
        "celery -A workers.app beat",
        "herald db upgrade",
    ):
        assert re.search(rf"exec {re.escape(server)}", text), f"{server} is not started with exec"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_brings_up_the_whole_system() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "beat"} <= set(services)
    for name in ("migrate", "api", "worker", "beat"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["command"][0] in COMMANDS
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        env = service["environment"]
        assert "@postgres:5432/" in env["HERALD_DATABASE_URL"] and env["HERALD_REDIS_URL"].startswith(
            "redis://redis:"
        )
        for dependency in service.get("depends_on", {}):
            assert dependency in services
    for name in ("api", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["healthcheck"]["test"][:2] == ["CMD", "herald-entrypoint"]
    grace = services["worker"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) >= 60, "docker stop must let the warm shutdown finish"
