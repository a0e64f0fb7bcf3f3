"""The chart's alerts: the PrometheusRule rendered by the real helm from
charts/spotfleet/rules/spotfleet.rules.yaml, checked and unit-tested by the real promtool
(tests/e2e/promtool/spotfleet.rules.test.yaml), on only the metrics the operator exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from spotfleet_operator import metrics
from tests.e2e import support
from tests.e2e.test_chart import helm, one, render

pytestmark = pytest.mark.e2e

UNIT_TESTS = Path(__file__).parent / "promtool" / "spotfleet.rules.test.yaml"
ALERTS = {
    "SpotfleetPolicyDegraded", "SpotfleetPlanDegraded", "SpotfleetCapacityBelowTarget",
    "SpotfleetSavingsBelowThreshold", "SpotfleetInterruptionSpike", "SpotfleetAwsThrottling",
    "SpotfleetStoreBufferFilling", "SpotfleetOperatorDown",
}  # fmt: skip


def promtool() -> str:
    """The promtool binary; a missing one fails the test (hack/system-deps.sh installs it)."""
    found = shutil.which("promtool", path="/usr/bin") or shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: run `bash hack/system-deps.sh` (Debian's prometheus)")
    return found


def rule_groups(tmp_path: Path, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``spec`` of the PrometheusRule that release ``spotfleet`` renders."""
    f = tmp_path / "rules-values.yaml"
    f.write_text(yaml.safe_dump({"prometheusRule": {"enabled": True, **(values or {})}}))
    out = helm("template", "spotfleet", str(support.CHART), "-f", str(f), tmp=tmp_path)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    spec: dict[str, Any] = one(docs, "PrometheusRule")["spec"]
    return spec


def rules(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in spec["groups"] for r in g["rules"]}


def exported_names() -> set[str]:
    """Every series name the operator's registry can expose (with type suffixes)."""
    names: set[str] = set()
    for family in metrics.Metrics().registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_count", "_sum", "_bucket")}
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def test_promtool_checks_and_unit_tests_the_rendered_rules(tmp_path: Path) -> None:
    spec = rule_groups(tmp_path)
    assert set(rules(spec)) == ALERTS
    work = tmp_path / "promtool"
    work.mkdir()
    (work / "spotfleet.rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(UNIT_TESTS, work / UNIT_TESTS.name)
    check = subprocess.run(
        [promtool(), "check", "rules", "spotfleet.rules.yaml"],
        cwd=work, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout
    test = subprocess.run(
        [promtool(), "test", "rules", UNIT_TESTS.name],
        cwd=work, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout
    # every alert has a unit test that expects it to fire
    tested = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired = {t["alertname"] for g in tested for t in g["alert_rule_test"] if t["exp_alerts"]}
    assert fired == ALERTS


def test_the_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    # the same unit tests against a rule with another threshold: promtool must notice
    spec = rule_groups(tmp_path, {"alerts": {"interruptionSpike": {"threshold": 50}}})
    work = tmp_path / "promtool"
    work.mkdir()
    (work / "spotfleet.rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(UNIT_TESTS, work / UNIT_TESTS.name)
    test = subprocess.run(
        [promtool(), "test", "rules", UNIT_TESTS.name],
        cwd=work, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert test.returncode != 0
    assert "SpotfleetInterruptionSpike" in test.stdout + test.stderr


def test_rules_use_only_metrics_the_operator_exports(tmp_path: Path) -> None:
    exported = exported_names()
    used = {
        name
        for rule in rules(rule_groups(tmp_path)).values()
        for name in re.findall(r"\bspotfleet_[a-z_]+", rule["expr"])
    }
    assert used and used <= exported, used - exported
    # and docs/metrics.md names them
    documented = (support.REPO / "docs" / "metrics.md").read_text()
    for name in used:
        base = re.sub(r"_(count|sum|bucket)$", "", name)
        assert f"`{base}`" in documented, base


def test_the_packaged_chart_renders_the_same_rules(tmp_path: Path) -> None:
    # .Files.Get reads rules/ from the archive too: `helm package` must ship it
    helm("package", str(support.CHART), "-d", str(tmp_path), tmp=tmp_path)
    archive = tmp_path / "spotfleet-0.1.0.tgz"
    out = helm(
        "template", "spotfleet", str(archive), "--set", "prometheusRule.enabled=true", tmp=tmp_path
    )
    packaged = one([d for d in yaml.safe_load_all(out.stdout) if d], "PrometheusRule")
    assert packaged["spec"] == rule_groups(tmp_path)


def test_prometheus_rule_is_off_by_default(tmp_path: Path) -> None:
    assert not [d for d in render(tmp_path) if d["kind"] == "PrometheusRule"]


def test_values_set_labels_thresholds_and_which_alerts(tmp_path: Path) -> None:
    docs = render(
        tmp_path,
        {
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "kps"},
                "alertLabels": {"team": "platform"},
                "alerts": {
                    "savingsBelowThreshold": {"threshold": 0.55, "for": "2h"},
                    "storeBufferFilling": {"enabled": False},
                    "operatorDown": {"selector": 'namespace="ops",service="x"'},
                },
            }
        },
    )
    pr = one(docs, "PrometheusRule")
    assert pr["metadata"]["labels"]["release"] == "kps"
    assert pr["metadata"]["namespace"] == "ops"
    got = rules(pr["spec"])
    assert set(got) == ALERTS - {"SpotfleetStoreBufferFilling"}
    assert all(r["labels"]["team"] == "platform" for r in got.values())
    savings = got["SpotfleetSavingsBelowThreshold"]
    assert "spotfleet_savings_ratio < 0.55" in savings["expr"] and savings["for"] == "2h"
    assert got["SpotfleetOperatorDown"]["expr"] == (
        'absent(spotfleet_build_info{namespace="ops",service="x"})'
    )
    # default selector: the job of the release's metrics Service (the ServiceMonitor's)
    default = rules(rule_groups(tmp_path))["SpotfleetOperatorDown"]
    assert default["expr"] == 'absent(spotfleet_build_info{job="spotfleet-metrics"})'
