"""charts/spotfleet/values.schema.json, enforced by the real helm: wrong values are refused
by ``helm lint`` and ``helm template`` with a message naming the key; every value of
values.yaml is described by it; the defaults and an all-options file lint and render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import support
from tests.e2e.test_chart import helm, one

pytestmark = pytest.mark.e2e

SCHEMA = support.CHART / "values.schema.json"
ALL_OPTIONS = Path(__file__).parent / "values" / "all-options.yaml"

#: (values, the key's path as helm names it, what is wrong)
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"replicas": "abc"}, "at '/replicas'", "got string, want integer"),
    ({"replicas": -1}, "at '/replicas'", "minimum"),
    ({"replicsa": 1}, "at ''", "additional properties 'replicsa' not allowed"),
    ({"logLevel": "LOUD"}, "at '/logLevel'", "value must be one of"),
    ({"metrics": {"port": 70000}}, "at '/metrics/port'", "maximum"),
    ({"health": {"port": 0}}, "at '/health/port'", "minimum"),
    ({"reconcileIntervalSeconds": -5}, "at '/reconcileIntervalSeconds'", "exclusiveMinimum"),
    ({"reconcileIntervalSeconds": 0}, "at '/reconcileIntervalSeconds'", "exclusiveMinimum"),
    ({"watch": {"namespaces": "team-a"}}, "at '/watch/namespaces'", "got string, want array"),
    ({"watch": {"namespaces": ["Team_A"]}}, "at '/watch/namespaces/0'", "does not match pattern"),
    ({"image": {"tagg": "x"}}, "at '/image'", "additional properties 'tagg' not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'", "value must be one of"),
    ({"serviceMonitor": {"enabled": "yes"}}, "at '/serviceMonitor/enabled'", "want boolean"),
    ({"serviceMonitor": {"interval": "30"}}, "at '/serviceMonitor/interval'", "pattern"),
    ({"service": {"type": "Ingress"}}, "at '/service/type'", "value must be one of"),
    ({"extraEnv": [{"value": "1"}]}, "at '/extraEnv/0'", "missing property 'name'"),
    ({"store": {"queueSize": 0}}, "at '/store/queueSize'", "minimum"),
    ({"store": {"queueSize": "big"}}, "at '/store/queueSize'", "want null or integer"),
    ({"jobs": {"priceBackfillHours": 3000}}, "at '/jobs/priceBackfillHours'", "maximum"),
    ({"jobs": {"timeoutSecs": 1}}, "at '/jobs'", "additional properties 'timeoutSecs' not allowed"),
    (
        {"prometheusRule": {"alerts": {"savingsBelowThreshold": {"threshold": 1.5}}}},
        "at '/prometheusRule/alerts/savingsBelowThreshold/threshold'",
        "maximum",
    ),
    (
        {"prometheusRule": {"alerts": {"interruptionSpike": {"for": "-1m"}}}},
        "at '/prometheusRule/alerts/interruptionSpike/for'",
        "pattern",
    ),
    (
        {"prometheusRule": {"alerts": {"operatorDwn": {}}}},
        "at '/prometheusRule/alerts'",
        "additional properties 'operatorDwn' not allowed",
    ),
]


@pytest.mark.parametrize("command", ["lint", "template"])
@pytest.mark.parametrize(
    ("values", "where", "what"), REFUSED, ids=[w.split("'")[1] or "/" for _, w, _ in REFUSED]
)
def test_wrong_values_are_refused_naming_the_key(
    tmp_path: Path, command: str, values: dict[str, Any], where: str, what: str
) -> None:
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    release = ["rel"] if command == "template" else []  # helm lint takes the chart only
    out = helm(command, *release, str(support.CHART), "-f", str(f), tmp=tmp_path, check=False)
    assert out.returncode != 0, out.stdout
    text = out.stdout + out.stderr
    assert "values don't meet the specifications of the schema" in text, text
    lines = [ln for ln in text.splitlines() if where in ln]
    assert lines and all(what in ln for ln in lines), text


def _leaves(values: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for k, v in values.items():
        if isinstance(v, dict) and v:
            out.extend(_leaves(v, (*path, k)))
        else:
            out.append((*path, k))
    return out


def _node(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = schema
    for key in path:
        props: dict[str, Any] = node.get("properties") or {}
        free: Any = node.get("additionalProperties")  # a map: {key: a schema for every value}
        assert key in props or isinstance(free, dict), f"no schema for {'.'.join(path)}"
        node = props.get(key, free)
    return node


def test_the_schema_describes_every_value_and_its_defaults_pass(tmp_path: Path) -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    defaults = yaml.safe_load((support.CHART / "values.yaml").read_text())
    leaves = _leaves(defaults)
    assert len(leaves) > 60
    for path in leaves:
        node = _node(schema, path)
        assert "type" in node, f"{'.'.join(path)} has no type in values.schema.json"
    # a misspelt key is refused at the top and in every object whose keys are the chart's
    closed = [(), ("image",), ("watch",), ("metrics",), ("database",), ("store",), ("jobs",),
              ("serviceMonitor",),
              ("prometheusRule",), ("prometheusRule", "alerts"),
              ("prometheusRule", "alerts", "capacityBelowTarget")]  # fmt: skip
    for path in closed:
        assert _node(schema, path)["additionalProperties"] is False, path
    # and the all-options file sets only keys the schema knows
    for path in _leaves(yaml.safe_load(ALL_OPTIONS.read_text())):
        if path[0] not in {"affinity", "tolerations", "extraEnv"}:  # Kubernetes' own types
            assert "type" in _node(schema, path), path


@pytest.mark.parametrize("values_file", [None, ALL_OPTIONS], ids=["defaults", "all-options"])
def test_defaults_and_all_options_lint_strict_and_render(
    tmp_path: Path, values_file: Path | None
) -> None:
    extra = ["-f", str(values_file)] if values_file else []
    out = helm("lint", "--strict", str(support.CHART), *extra, tmp=tmp_path)
    assert "0 chart(s) failed" in out.stdout
    assert "[ERROR]" not in out.stdout and "[WARNING]" not in out.stdout
    rendered = helm("template", "rel", str(support.CHART), "-n", "ops", *extra, tmp=tmp_path)
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "Service", "ConfigMap"} <= kinds
    if values_file is None:
        assert not kinds & {"ServiceMonitor", "PrometheusRule", "KopfPeering", "Role"}
        return
    assert {"ServiceMonitor", "PrometheusRule", "KopfPeering", "Role", "RoleBinding"} <= kinds
    dep = one(docs, "Deployment")
    assert dep["metadata"]["name"] == "spotfleet-a" and dep["spec"]["replicas"] == 2
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.example.com/platform/spotfleet:0.1.0-rc1"
    assert c["imagePullPolicy"] == "Always"
    env = {e["name"]: e for e in c["env"]}
    assert env["SPOTFLEET_LOG_LEVEL"]["value"] == "DEBUG"
    assert env["SPOTFLEET_RECONCILE_INTERVAL_SECONDS"]["value"] == "30.5"
    assert env["SPOTFLEET_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "spotfleet-db",
        "key": "dsn",
    }
    rule = one(docs, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "SpotfleetPlanDegraded" not in alerts and len(alerts) == 7
