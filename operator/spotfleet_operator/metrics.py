"""Every Prometheus metric the operator exports, in one place.

Names are ``spotfleet_<what>_<unit>``; labels are ``namespace``, ``policy`` and,
where it matters, ``market``, ``instance_type``, ``zone`` (bounded by the
catalog), ``operation``/``code`` (bounded by the EC2 API). Each :class:`Metrics`
owns its registry, so tests and several operators in one process never collide.
"""

from __future__ import annotations

import prometheus_client as prom

POLICY = ("namespace", "policy")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The operator's metrics on their own registry."""

    def __init__(self, registry: prom.CollectorRegistry | None = None) -> None:
        r = self.registry = registry or prom.CollectorRegistry()
        self.cost = prom.Gauge(
            "spotfleet_cost_usd_per_hour",
            "What the running fleet costs, USD/h.",
            POLICY,
            registry=r,
        )
        self.on_demand_equivalent = prom.Gauge(
            "spotfleet_on_demand_equivalent_usd_per_hour",
            "What the same instances would cost on-demand, USD/h.",
            POLICY,
            registry=r,
        )
        self.savings = prom.Gauge(
            "spotfleet_savings_ratio",
            "1 - cost / on-demand equivalent (0..1).",
            POLICY,
            registry=r,
        )
        self.capacity_desired = prom.Gauge(
            "spotfleet_capacity_desired_units",
            "Capacity the plan holds, in the policy's unit.",
            (*POLICY, "market"),
            registry=r,
        )
        self.capacity_fulfilled = prom.Gauge(
            "spotfleet_capacity_fulfilled_units",
            "Capacity running now, in the policy's unit.",
            (*POLICY, "market"),
            registry=r,
        )
        self.capacity_target = prom.Gauge(
            "spotfleet_capacity_target_units",
            "The policy's capacity target, in its unit.",
            POLICY,
            registry=r,
        )
        self.instances = prom.Gauge(
            "spotfleet_instances",
            "Running instances per pool.",
            (*POLICY, "market", "instance_type", "zone"),
            registry=r,
        )
        self.interruptions = prom.Counter(
            "spotfleet_interruptions_total",
            "Spot interruption warnings received for owned instances.",
            POLICY,
            registry=r,
        )
        self.rebalance_recommendations = prom.Counter(
            "spotfleet_rebalance_recommendations_total",
            "Rebalance recommendations received for owned instances.",
            POLICY,
            registry=r,
        )
        self.launches = prom.Counter(
            "spotfleet_launches_total",
            "Instances launched.",
            (*POLICY, "market"),
            registry=r,
        )
        self.terminations = prom.Counter(
            "spotfleet_terminations_total",
            "Instances terminated by the operator.",
            (*POLICY, "reason"),
            registry=r,
        )
        self.reconcile_duration = prom.Histogram(
            "spotfleet_reconcile_duration_seconds",
            "Wall time of one reconcile (observe, decide, act, report).",
            ("outcome",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.decision_duration = prom.Histogram(
            "spotfleet_decision_duration_seconds",
            "Wall time of one planner.decide call.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.decisions_reused = prom.Counter(
            "spotfleet_decisions_reused_total",
            "Reconciles that reused the policy's last plan (nothing it depends on changed).",
            registry=r,
        )
        self.reconcile_errors = prom.Counter(
            "spotfleet_reconcile_errors_total",
            "Reconciles that ended in an error, by reason.",
            (*POLICY, "reason"),
            registry=r,
        )
        self.aws_calls = prom.Counter(
            "spotfleet_aws_api_calls_total",
            "AWS API calls by operation and error code ('' for success).",
            ("operation", "code"),
            registry=r,
        )
        self.risk = prom.Histogram(
            "spotfleet_risk_predicted_probability",
            "Interruption probabilities the risk model gave for the pools a plan chose.",
            ("model",),
            buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=r,
        )
        self.unavailable_pools = prom.Gauge(
            "spotfleet_unavailable_pools",
            "Pools currently marked out of capacity (after InsufficientInstanceCapacity).",
            registry=r,
        )
        self.kube_requests = prom.Counter(
            "spotfleet_kube_requests_total",
            "The operator's own Kubernetes API requests (Kopf's not included) by kind "
            "(status, event, secret, list) and HTTP status ('0': no answer).",
            ("kind", "code"),
            registry=r,
        )
        self.queue_messages = prom.Counter(
            "spotfleet_interruption_queue_messages_total",
            "Interruption-queue messages by outcome (handled, ignored, malformed, foreign).",
            ("outcome",),
            registry=r,
        )
        self.drainer_restarts = prom.Counter(
            "spotfleet_interruption_drainer_restarts_total",
            "Times the interruption drainer died and was restarted.",
            registry=r,
        )
        self.store_queue_depth = prom.Gauge(
            "spotfleet_store_queue_depth",
            "Audit rows waiting for the database.",
            registry=r,
        )
        self.store_rows = prom.Counter(
            "spotfleet_store_rows_total",
            "Audit rows by outcome (written, dropped when the buffer was full).",
            ("outcome",),
            registry=r,
        )
        self.store_write_errors = prom.Counter(
            "spotfleet_store_write_errors_total",
            "Failed attempts to write a batch of audit rows (they are retried).",
            registry=r,
        )
        self.store_rows_submitted = prom.Counter(
            "spotfleet_store_rows_submitted_total",
            "Rows handed to the store's writer queue, by table (written + dropped + queued).",
            ("table",),
            registry=r,
        )
        self.store_up = prom.Gauge(
            "spotfleet_store_up",
            "1 while the store's last write succeeded, 0 while it is retrying an outage.",
            registry=r,
        )
        self.job_runs = prom.Counter(
            "spotfleet_job_runs_total",
            "Runs of the operator's background jobs (prices, ledger, retention) by outcome.",
            ("job", "outcome"),
            registry=r,
        )
        self.job_rows = prom.Counter(
            "spotfleet_job_rows_total",
            "Rows a background job wrote (new price points, ledger hours) or deleted (retention).",
            ("job",),
            registry=r,
        )
        self.job_errors = prom.Counter(
            "spotfleet_job_errors_total",
            "Errors of the operator's background jobs (one per failed unit of work).",
            ("job",),
            registry=r,
        )
        self.job_duration = prom.Histogram(
            "spotfleet_job_duration_seconds",
            "Wall time of one run of a background job.",
            ("job",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.build_info = prom.Gauge(
            "spotfleet_build_info",
            "The operator's version, risk model and the model's version (artifact hash) (value 1).",
            ("version", "risk_model", "model_version"),
            registry=r,
        )
        self.orphaned_instances = prom.Gauge(
            "spotfleet_orphaned_instances",
            "Instances tagged by a SpotPolicy that no longer exists (never terminated silently).",
            registry=r,
        )

    def clear_policy(self, namespace: str, policy: str) -> None:
        """Drop every series of a deleted policy (once per deletion: it scans every series)."""
        for metric in (
            self.cost,
            self.on_demand_equivalent,
            self.savings,
            self.capacity_target,
            self.capacity_desired,
            self.capacity_fulfilled,
            self.instances,
        ):
            for labels in list(metric._metrics):
                if labels[:2] == (namespace, policy):
                    metric.remove(*labels)

    def exposition(self) -> bytes:
        """The text exposition format (what /metrics serves)."""
        return prom.generate_latest(self.registry)
