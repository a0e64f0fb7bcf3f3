"""Property: the real API server and the pydantic models agree on generated specs.

Hypothesis generates SpotPolicy specs (valid-looking specs with junk, borderline
or missing fields, and sometimes arbitrary JSON; see tests/unit/test_api_property.py)
and sends each to the real kube-apiserver with a server-side dry-run. Whatever
the server accepts, the models parse (both the manifest and what the server
returns) and the engine finds consistent; whatever the models reject, the
parser reports as InvalidSpec instead of raising. The run is bounded (40
examples) and derandomised so it is repeatable.
"""

from __future__ import annotations

import collections
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from spotfleet_cli import localcluster
from spotfleet_operator import api
from tests.unit import test_api_property as strategies

pytestmark = pytest.mark.integration


def test_server_and_models_agree_on_generated_specs(
    crds_installed: localcluster.LocalCluster, namespace: str
) -> None:
    outcomes: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategies.spec_bodies)
    def check(spec: Any) -> None:
        body = strategies.manifest(spec)
        out = crds_installed.kubectl(
            "create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
            input=json.dumps(body), check=False,
        )  # fmt: skip
        local = api.parse_policy(body)
        assert isinstance(local, api.ParsedPolicy | api.InvalidSpec)
        if out.returncode == 0:
            outcomes["accepted"] += 1
            stored = json.loads(out.stdout)
            from_server = api.parse_policy(stored)
            assert isinstance(from_server, api.ParsedPolicy), from_server.message
            assert isinstance(local, api.ParsedPolicy), local.message
            assert from_server.spec == local.spec
            assert api.to_engine_policy(from_server.spec).problems() == []
        else:
            outcomes["refused"] += 1
            assert "spec" in out.stderr, out.stderr
            assert isinstance(local, api.InvalidSpec), (
                f"models accepted what the server refused: {out.stderr}"
            )
            assert local.message

    check()
    print(f"server/models agreement over generated specs: {dict(outcomes)}")
    # a generator that only ever produced one outcome would test nothing
    assert outcomes["accepted"] >= 5, outcomes
    assert outcomes["refused"] >= 5, outcomes
