"""The Prometheus metrics of canary rollouts, declared once.

Two registries, one per process that exports them:

* :data:`CONTROLLER_REGISTRY` — the rollout controller (``vigil rollout``, the pipeline's deploy
  step). It is a batch-like process, so it pushes these to a Pushgateway after every decision
  (:func:`push`); the local rollout stack runs one, which its Prometheus scrapes.
* :data:`MIRROR_REGISTRY` — the shadow-mode mirror (:mod:`rollout.mirror`), scraped directly.

Conventions as for serving (``monitoring.metrics``): ``vigil_rollout_`` prefix, unit suffixes,
low-cardinality labels only: ``model_name``, ``phase`` (:data:`PHASES`), ``check``
(:data:`CHECKS`), ``result`` (``passed``/``failed``; for the mirror's copies ``answered``,
``failed``, ``dropped``) and ``agreement``; versions appear only in the info gauge.
"""

from __future__ import annotations

import logging
import urllib.error
from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import push_to_gateway

log = logging.getLogger(__name__)

#: A rollout's phases, in the order a successful one passes through them.
PHASES: Final = (
    "starting",  # the canary is being deployed (no traffic yet)
    "shadow",  # the canary sees a mirrored copy of the traffic; clients never see its answers
    "progressing",  # the canary receives its step's share of the traffic
    "promoting",  # the candidate becomes the champion and takes all traffic
    "promoted",
    "rolling_back",  # the canary's traffic goes back to the primary
    "rolled_back",
)
#: The analysis checks (see ``rollout.analysis``).
CHECKS: Final = (
    "evidence", "success_rate", "p99_latency", "p99_vs_primary", "degraded_share",
    "score_psi", "decision_rate", "decision_agreement",
)
PUSH_JOB: Final = "vigil_rollout"

CONTROLLER_REGISTRY = CollectorRegistry(auto_describe=True)
MIRROR_REGISTRY = CollectorRegistry(auto_describe=True)

TRAFFIC_PERCENT = Gauge(
    "vigil_rollout_traffic_percent",
    "Share of the traffic the rollout's candidate receives (100 once promoted, 0 once rolled "
    "back).",
    ["model_name"],
    registry=CONTROLLER_REGISTRY,
)
PHASE = Gauge(
    "vigil_rollout_phase",
    "Phase of the current rollout: 1 for the phase it is in, 0 for the others.",
    ["model_name", "phase"],
    registry=CONTROLLER_REGISTRY,
)
CHECKS_TOTAL = Counter(
    "vigil_rollout_checks_total",
    "Analysis checks by check and result (since the controller process started).",
    ["model_name", "check", "result"],
    registry=CONTROLLER_REGISTRY,
)
FAILED_ANALYSES = Gauge(
    "vigil_rollout_failed_analyses",
    "Analyses of the current rollout that failed; the rollout rolls back at its threshold.",
    ["model_name"],
    registry=CONTROLLER_REGISTRY,
)
INFO = Gauge(
    "vigil_rollout_info",
    "Rollouts this controller process drove: primary and candidate versions and the target "
    "(value 1).",
    ["model_name", "primary_version", "canary_version", "target"],
    registry=CONTROLLER_REGISTRY,
)

SHADOW_REQUESTS = Counter(
    "vigil_rollout_shadow_requests_total",
    "Scoring requests the mirror copied to the canary, by what became of the copy.",
    ["model_name", "result"],
    registry=MIRROR_REGISTRY,
)
SHADOW_TRANSACTIONS = Counter(
    "vigil_rollout_shadow_transactions_total",
    "Mirrored transactions by whether the canary's decision equals the primary's.",
    ["model_name", "agreement"],
    registry=MIRROR_REGISTRY,
)


def set_state(
    model_name: str,
    *,
    phase: str,
    traffic_percent: float,
    failed_analyses: int,
    primary_version: int | None,
    canary_version: int,
    target: str,
) -> None:
    """The controller's gauges for the rollout's current state."""
    for known in PHASES:
        PHASE.labels(model_name, known).set(1 if known == phase else 0)
    TRAFFIC_PERCENT.labels(model_name).set(traffic_percent)
    FAILED_ANALYSES.labels(model_name).set(failed_analyses)
    INFO.labels(model_name, str(primary_version or "none"), str(canary_version), target).set(1)


def count_checks(model_name: str, results: Iterable[tuple[str, bool]]) -> None:
    """Count checks given as (check, passed) pairs."""
    for check, passed in results:
        CHECKS_TOTAL.labels(model_name, check, "passed" if passed else "failed").inc()


def push(url: str | None, model_name: str, timeout_s: float = 5.0) -> bool:
    """Push the controller's metrics to the Pushgateway at ``url`` (grouped by model name);
    False (and a warning) when it does not answer: metrics never stop a rollout."""
    if not url:
        return False
    try:
        push_to_gateway(url, job=PUSH_JOB, registry=CONTROLLER_REGISTRY,
                        grouping_key={"model_name": model_name}, timeout=timeout_s)
    except (urllib.error.URLError, OSError) as e:
        log.warning("cannot push rollout metrics to %s: %s", url, e)
        return False
    return True


def controller_exposition() -> bytes:
    return generate_latest(CONTROLLER_REGISTRY)


def mirror_exposition() -> bytes:
    return generate_latest(MIRROR_REGISTRY)
