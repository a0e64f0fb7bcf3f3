"""The chart rendered by the real helm binary (lint, template, package), no cluster: the
value combinations the e2e installs do not cover, and the CRDs reused from crds/."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_cli import localcluster
from tests.e2e import support

pytestmark = pytest.mark.e2e


def helm(*args: str, tmp: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp / var.lower())
    out = subprocess.run(
        [str(localcluster.find_binary("helm")), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def render(
    tmp_path: Path, values: dict[str, Any] | None = None, *extra: str
) -> list[dict[str, Any]]:
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values or {}))
    out = helm(
        "template", "rel", str(support.CHART), "-n", "ops", "-f", str(f), *extra, tmp=tmp_path
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_crds_are_a_symlink_to_the_repos_crds(tmp_path: Path) -> None:
    link = support.CHART / "crds"
    assert link.is_symlink() and os.readlink(link) == "../../crds"
    # helm follows it: --include-crds renders exactly the repo's CRDs (SpotPolicy, and
    # Kopf's peering resources for HA) ...
    docs = render(tmp_path, None, "--include-crds")
    rendered = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    expected = {
        d["metadata"]["name"]: d
        for f in sorted((support.REPO / "crds").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    }
    assert rendered == expected
    assert set(rendered) == {
        "spotpolicies.spotfleet.dev",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }
    source = support.REPO / "crds" / "spotpolicies.spotfleet.dev.yaml"
    # ... and `helm package` puts the same bytes in the chart archive
    helm("package", str(support.CHART), "-d", str(tmp_path), tmp=tmp_path)
    with tarfile.open(tmp_path / "spotfleet-0.1.0.tgz") as tar:
        member = tar.extractfile("spotfleet/crds/spotpolicies.spotfleet.dev.yaml")
        assert member is not None
        assert member.read() == source.read_bytes()


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"watch": {"namespaces": ["a", "b"]}},
        {"serviceMonitor": {"enabled": True}, "dashboards": {"enabled": False}},
        {"database": {"existingSecret": "pg"}, "aws": {"credentialsSecret": "op"}},
    ],
    ids=["defaults", "namespaced", "servicemonitor", "secrets"],
)
def test_helm_lint_strict_is_clean(tmp_path: Path, values: dict[str, Any]) -> None:
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    out = helm("lint", "--strict", str(support.CHART), "-f", str(f), tmp=tmp_path)
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


def test_defaults_render_a_cluster_wide_non_root_operator(tmp_path: Path) -> None:
    docs = render(tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service",
        "ServiceAccount",
    ]  # fmt: skip
    c = container(docs)
    assert c["image"] == "spotfleet:0.1.0"  # tag defaults to appVersion
    assert c["args"] == ["--all-namespaces"]  # after the ENTRYPOINT
    assert support.image_entrypoint() == ["spotfleet", "run"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SPOTFLEET_DATABASE_URL"] == "sqlite+aiosqlite:////var/lib/spotfleet/audit.db"
    assert env["SPOTFLEET_METRICS_PORT"] == "8080" and env["SPOTFLEET_HEALTH_PORT"] == "8081"
    assert "SPOTFLEET_AWS_ENDPOINT_URL" not in env and "envFrom" not in c
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532  # the Dockerfile's user
    assert "useradd --uid 65532" in (support.REPO / "Dockerfile").read_text()
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert one(docs, "ConfigMap")["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_settings_map_to_the_operators_environment(tmp_path: Path) -> None:
    docs = render(
        tmp_path,
        {
            "reconcileIntervalSeconds": 15,
            "awsEndpointUrl": "http://sim:5000",
            "interruptionQueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q",
            "riskModel": "advisor",
            "logLevel": "DEBUG",
            "database": {"url": "sqlite:////data/x.db"},
            "extraEnv": [{"name": "SPOTFLEET_MARKET_LOOKBACK_HOURS", "value": "24"}],
        },
    )
    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env == {
        "SPOTFLEET_RECONCILE_INTERVAL_SECONDS": "15",
        "SPOTFLEET_METRICS_PORT": "8080",
        "SPOTFLEET_HEALTH_PORT": "8081",
        "SPOTFLEET_LOG_LEVEL": "DEBUG",
        "SPOTFLEET_RISK_MODEL": "advisor",
        "SPOTFLEET_DATABASE_URL": "sqlite:////data/x.db",
        "SPOTFLEET_AWS_ENDPOINT_URL": "http://sim:5000",
        "SPOTFLEET_INTERRUPTION_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/q",
        "SPOTFLEET_MARKET_LOOKBACK_HOURS": "24",
    }
    # every SPOTFLEET_* name is a real setting of the operator
    from spotfleet_operator import config

    fields = {config.ENV_PREFIX + n.upper() for n in config.OperatorConfig.model_fields}
    assert set(env) <= fields


def test_postgresql_url_comes_from_a_secret(tmp_path: Path) -> None:
    docs = render(tmp_path, {"database": {"existingSecret": "pg", "existingSecretKey": "dsn"}})
    (db,) = [e for e in container(docs)["env"] if e["name"] == "SPOTFLEET_DATABASE_URL"]
    assert db == {
        "name": "SPOTFLEET_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "pg", "key": "dsn"}},
    }


def test_namespaced_mode_uses_a_role_per_namespace(tmp_path: Path) -> None:
    docs = render(tmp_path, {"watch": {"namespaces": ["a", "b"]}})
    assert container(docs)["args"] == ["--namespace", "a", "--namespace", "b"]
    roles = [d for d in docs if d["kind"] == "Role"]
    assert [r["metadata"]["namespace"] for r in roles] == ["a", "b"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert [(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings] == [
        ("a", "rel-spotfleet"),
        ("b", "rel-spotfleet"),
    ]
    cluster_resources = {r for rule in one(docs, "ClusterRole")["rules"] for r in rule["resources"]}
    assert cluster_resources == {"customresourcedefinitions", "namespaces"}
    assert {r for rule in roles[0]["rules"] for r in rule["resources"]} == {
        "spotpolicies", "spotpolicies/status", "secrets", "events",
    }  # fmt: skip


def test_service_monitor_selects_the_metrics_service(tmp_path: Path) -> None:
    docs = render(tmp_path, {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}})
    sm = one(docs, "ServiceMonitor")
    svc = one(docs, "Service")
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}


def test_service_account_annotations_and_scheduling(tmp_path: Path) -> None:
    arn = "arn:aws:iam::111122223333:role/spotfleet"
    docs = render(
        tmp_path,
        {
            "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": arn}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {}},
            "resources": {"requests": {"cpu": "1"}},
        },
    )
    assert one(docs, "ServiceAccount")["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": arn
    }
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "ops"
    assert pod["affinity"] == {"nodeAffinity": {}}
    # helm merges maps: the default memory request and limit stay
    assert container(docs)["resources"] == {
        "requests": {"cpu": "1", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "replicas must be 0 or 1"),
        ({"database": {"url": "sqlite:///x", "existingSecret": "pg"}}, "not both"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ],
)
def test_invalid_values_are_refused_with_a_message(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    out = helm("template", "rel", str(support.CHART), "-f", str(f), tmp=tmp_path, check=False)
    assert out.returncode != 0
    assert message in out.stderr
