"""hack/kind-up.sh (`make kind`), for users' own machines: kind cannot start here (no
container engine that can pull its node image), so the script is linted and its plan
(``--plan``: every command, none run) is checked against the repository: the image
path CI runs, both charts with the loaded image, and a dry-run policy whose Secret
and name the script creates and waits for."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e import support
from tests.e2e.test_chart import helm, one
from tests.e2e.test_image import tool

pytestmark = pytest.mark.e2e

SCRIPT = support.REPO / "hack" / "kind-up.sh"
KEY = "AKIAKINDPLANSENTINEL"
SECRET_KEY = "kind/plan/secret/sentinel/never/printed"


def plan(**env: str) -> list[list[str]]:
    out = subprocess.run(
        ["bash", str(SCRIPT), "--plan"],
        capture_output=True,
        text=True,
        env={**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, **env},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert KEY not in out.stdout + out.stderr and SECRET_KEY not in out.stdout + out.stderr
    return [shlex.split(line.split(" < ")[0]) for line in out.stdout.splitlines()]


def test_the_script_passes_shellcheck() -> None:
    out = subprocess.run([tool("shellcheck"), str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr


def test_the_plan_builds_loads_installs_and_applies_in_order(tmp_path: Path) -> None:
    steps = plan(CLUSTER="mine", IMAGE="localhost/spotfleet:try")
    heads = [" ".join(s[:3]) for s in steps]
    order = [
        "env IMAGE=localhost/spotfleet:try bash",  # hack/image.sh build: CI's image path
        "kind create cluster",
        "kind load image-archive",
        "helm upgrade --install",  # the CRDs chart
        "helm upgrade --install",  # the operator chart
        "kubectl --namespace spotfleet-system",  # rollout status
        "kubectl get spotpolicies",
    ]
    at = [heads.index(o, (heads.index(order[i - 1]) + 1) if i else 0) for i, o in enumerate(order)]
    assert at == sorted(at), heads
    build = steps[heads.index(order[0])]
    assert build[-2:] == [str(support.REPO / "hack" / "image.sh"), "build"]
    save = next(s for s in steps if "save" in s)
    archive = save[save.index("-o") + 1]
    load = next(s for s in steps if s[:3] == ["kind", "load", "image-archive"])
    assert load[3] == archive and load[-2:] == ["--name", "mine"]
    assert save[-1] == "localhost/spotfleet:try"
    crds, chart = [s for s in steps if s[:3] == ["helm", "upgrade", "--install"]]
    assert crds[3:5] == ["spotfleet-crds", str(support.REPO / "charts" / "spotfleet-crds")]
    assert chart[3:5] == ["spotfleet", str(support.CHART)]
    # the operator chart, rendered with the script's own flags, runs the loaded image
    flags = chart[5:]
    rendered = helm("template", "spotfleet", str(support.CHART), *flags, tmp=tmp_path).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    deploy = one(docs, "Deployment")
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "localhost/spotfleet:try" and c["imagePullPolicy"] == "Never"
    rollout = next(s for s in steps if "rollout" in s)
    assert f"deployment/{deploy['metadata']['name']}" in rollout


def test_the_policy_it_applies_is_a_dry_run_with_the_secret_it_creates() -> None:
    steps = plan(TENANT_NAMESPACE="team-x")
    applied = next(s for s in steps if s[-2:] and s[-2] == "-f" and s[-1].endswith(".yaml"))
    policy = yaml.safe_load(Path(applied[-1]).read_text())
    assert policy["spec"]["dryRun"] is True  # decides and reports, never launches
    secret = next(s for s in steps if "secret" in s and "generic" in s)
    assert secret[secret.index("generic") + 1] == policy["spec"]["credentials"]["secretRef"]["name"]
    assert "--namespace" in secret and secret[secret.index("--namespace") + 1] == "team-x"
    wait = next(s for s in steps if "wait" in s)
    assert f"spotpolicy/{policy['metadata']['name']}" in wait


def test_make_kind_runs_the_script() -> None:
    dry = subprocess.run(["make", "-n", "kind"], capture_output=True, text=True, cwd=support.REPO)
    assert dry.returncode == 0, dry.stderr
    assert "hack/kind-up.sh" in dry.stdout
