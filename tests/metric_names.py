"""Metric names Vigil declares (every registry a Vigil process exports or pushes), and the
metric names a PromQL expression uses: shared by the rules and dashboards tests."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry

import monitoring.metrics  # noqa: F401 - declares the serving metrics on the default registry
from monitoring import drift, freshness, performance, retrain, rollout, skew

#: Series the Pushgateway adds to every pushed group.
PUSHGATEWAY_SERIES = {"push_time_seconds", "push_failure_time_seconds"}
_KEYWORDS = {"sum", "by", "rate", "increase", "max", "min", "avg", "or", "and", "unless", "on",
             "time", "histogram_quantile", "absent", "le", "bool", "ignoring", "without"}


def series_names(registry: CollectorRegistry) -> set[str]:
    """Every series name ``registry`` can expose (``_total``, ``_bucket``... included)."""
    out: set[str] = set()
    for family in registry.collect():
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
                    "_created"), "gauge": ("",), "summary": ("_count", "_sum", "_created")}
        out |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return out


def sample_results() -> tuple[drift.DriftResult, performance.LivePerformance,
                              skew.SkewResult]:
    """One result of each pushing job, for registries and pushes of every series."""
    now = datetime.now(UTC)
    sample_drift = drift.DriftResult(
        model_name="fraud", model_version=1,
        features=(drift.ColumnDrift("TX_AMOUNT", "m", 0.1, 0.2, True),),
        score=drift.ColumnDrift("score", "m", 0.1, 0.0, False),
        decision=drift.ColumnDrift("decision", "m", 0.1, 0.0, False),
        drifted_features=1, drifted_share=1.0, drift_share=0.5, decision_rate_current=0.1,
        decision_rate_reference=0.1, current_rows=1, reference_rows=1, current_window=None,
        reference="", seconds=0.0, finished_at=now, key_features=("TX_AMOUNT",))
    sample_live = performance.LivePerformance(
        model_name="fraud", model_version=1,
        days=(performance.DayFigures("2018-06-01", 10, 1, 0.9, 0.5, 0.3, 12.0),),
        auc_roc=0.9, average_precision=0.5, card_precision_at_100=0.3, decision_cost=12.0,
        decision_cost_per_transaction=1.2, transactions=10, frauds=1,
        evaluated={"auc_roc": 0.9, "average_precision": 0.6, "card_precision_at_100": 0.3},
        finished_at=now)
    sample_skew = skew.SkewResult("fraud", 10, 0, 0, {"TX_AMOUNT": 0}, None, 0.0, now)
    return sample_drift, sample_live, sample_skew


def vigil_series() -> set[str]:
    """Every series name a Vigil process exports or pushes, by its declarations."""
    sample_drift, sample_live, sample_skew = sample_results()
    registries = [REGISTRY, rollout.CONTROLLER_REGISTRY, rollout.MIRROR_REGISTRY,
                  drift.result_registry(sample_drift), performance.live_registry([sample_live]),
                  skew.skew_registry(sample_skew),
                  freshness.materialization_registry("vigil", {"customer_history":
                                                               datetime.now(UTC)}),
                  retrain.Retrainer(lambda: retrain.Outcome("registered"),
                                    model_name="fraud").registry]
    return set().union(*(series_names(r) for r in registries)) | PUSHGATEWAY_SERIES


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (labels, ranges, grouping and functions removed)."""
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    text = re.sub(r"\b(by|on|without|ignoring) \([^)]*\)", "", text)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text)) - _KEYWORDS
    return {n for n in names if not re.fullmatch(r"\d+(\.\d+)?[smhd]?", n)}


def rule_expressions() -> dict[str, str]:
    """Alert name -> expression of every rule in ``monitoring/rules/vigil-rules.yml``."""
    import yaml

    path = Path(__file__).parents[1] / "monitoring" / "rules" / "vigil-rules.yml"
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for g in groups for rule in g["rules"]}


def used_names(prefixes: tuple[str, ...]) -> set[str]:
    """Metric names with one of ``prefixes`` that the rules or the dashboards query."""
    from monitoring import grafana

    exprs = [*rule_expressions().values()]
    exprs += [e.replace("$__rate_interval", "5m") for m in grafana.build().values()
              for e in grafana.expressions(m)]
    return {n for e in exprs for n in metric_names(e) if n.startswith(prefixes)}


def scraped_names(text: str) -> set[str]:
    """Series names in a Prometheus text exposition."""
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines()
            if line and not line.startswith("#")}
