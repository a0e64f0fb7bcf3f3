"""The baseline of bench/scale.py: a no-op Kopf operator on SpotPolicies.

What any Kopf operator that reports status does for a policy, and nothing else: a
create/update/resume handler that writes ``Ready=True`` for the policy's generation, a
timer on the same interval as spotfleet's reconcile loop (doing nothing), and a delete
handler (so Kopf keeps a finalizer, as spotfleet does). Run with
``kopf run bench/noop_operator.py --standalone -A``; the interval comes from
``NOOP_INTERVAL_SECONDS`` (default 60).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

import kopf

INTERVAL = float(os.environ.get("NOOP_INTERVAL_SECONDS", "60"))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "spotfleet.dev/finalizer"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.resume("spotfleet.dev", "v1alpha1", "spotpolicies")
@kopf.on.create("spotfleet.dev", "v1alpha1", "spotpolicies")
@kopf.on.update("spotfleet.dev", "v1alpha1", "spotpolicies", field="spec")
def ready(meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    gen = meta.get("generation")
    patch.status["observedGeneration"] = gen
    patch.status["conditions"] = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Reconciled",
            "message": "no-op",
            "observedGeneration": gen,
            "lastTransitionTime": now,
        }
    ]


@kopf.timer("spotfleet.dev", "v1alpha1", "spotpolicies", interval=INTERVAL, initial_delay=INTERVAL)
def tick(**_: Any) -> None:
    return None


@kopf.on.delete("spotfleet.dev", "v1alpha1", "spotpolicies")
def delete(**_: Any) -> None:
    return None
