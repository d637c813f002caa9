"""What `pip install .` in deploy/Dockerfile puts in the image: every runtime file of our four packages.

The image is built from a wheel, not the source tree, so a template or migration missing from
`[tool.setuptools.package-data]` would work in every test here and fail in production. Built in a copy of
the tree so nothing is written into the working directory, with pip's build isolation as in the Dockerfile
(pip fetches the build backend from PyPI).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "workers", "providers", "shared")
# Needed to author migrations (`alembic revision`), not to run them.
AUTHORING_ONLY = {"shared/migrations/script.py.mako"}


def source_files() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                found.add(path.relative_to(ROOT).as_posix())
    return found - AUTHORING_ONLY


def test_the_wheel_carries_every_runtime_file(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("herald-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.split("/", 1)[0] in PACKAGES}
        entry_points = archive.read(
            next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        ).decode()
    missing = sorted(source_files() - shipped)
    assert not missing, f"not in the wheel (add them to [tool.setuptools.package-data]): {missing}"
    # The image's `migrate` command is the `herald` console script.
    assert "herald = api.cli:main" in entry_points
