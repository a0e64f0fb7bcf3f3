"""Every command in the README's and getting-started's ```sh blocks is executed here,
as written, from the repository root, so the docs cannot rot.

Commands marked ``# runs until Ctrl-C`` are started, awaited until they say they are
ready, interrupted with SIGINT and must then exit cleanly. ``make test`` is the one
command not run here (it would run this very test): it is what ``.ci/run`` executes,
which the test checks instead."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/getting-started.md")
LONG_RUNNING = "# runs until Ctrl-C"
READY_MARKERS = ("spotfleet-sim listening on", "Left running.")


def commands() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    out.append((doc, line.strip()))
    return out


def test_the_docs_have_commands() -> None:
    cmds = [c for _, c in commands()]
    assert "make demo" in cmds and "make test" in cmds
    assert len(cmds) >= 6


def test_make_test_is_what_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)
    dry = subprocess.run(
        ["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert ".venv/bin/pytest" in dry.stdout and "lint-imports" in dry.stdout


@pytest.mark.parametrize(
    ("doc", "command"), [c for c in commands() if c[1] != "make test"], ids=lambda v: v[:60]
)
def test_doc_command_runs(doc: str, command: str, tmp_path: Path) -> None:
    shell = command.split(" #")[0].strip() if LONG_RUNNING not in command else command
    if LONG_RUNNING in command:
        log = tmp_path / "out.log"
        with log.open("w") as f:
            proc = subprocess.Popen(
                shell,
                shell=True,
                cwd=REPO,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                text = log.read_text()
                if any(m in text for m in READY_MARKERS):
                    break
                assert proc.poll() is None, f"{command!r} exited early:\n{text[-3000:]}"
                time.sleep(0.5)
            else:
                pytest.fail(f"{command!r} never said it was ready:\n{log.read_text()[-3000:]}")
        finally:
            os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
        assert rc in (0, 130, -signal.SIGINT), log.read_text()[-3000:]
        if "demo" in command:
            assert "torn down" in log.read_text()
        return
    done = subprocess.run(shell, shell=True, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"{doc}: {command!r}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (REPO / "demo-summary.json").unlink(missing_ok=True)
