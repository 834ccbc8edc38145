"""The alert rules: promtool accepts them, every alert has firing and silent cases that pass
(`promtool test rules`), and every metric they name is one Vigil declares."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

import monitoring.metrics  # noqa: F401 - declares the serving metrics on the default registry
from monitoring import drift, freshness, performance, rollout, skew

pytestmark = pytest.mark.unit

RULES = Path(__file__).parents[2] / "monitoring" / "rules"
#: Series the Pushgateway adds to every pushed group.
PUSHGATEWAY_SERIES = {"push_time_seconds", "push_failure_time_seconds"}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool (Debian package prometheus) is required: make system-packages"
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def series_names(registry: CollectorRegistry) -> set[str]:
    """Every series name ``registry`` can expose (``_total``, ``_bucket``... included)."""
    out: set[str] = set()
    for family in registry.collect():
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
                    "_created"), "gauge": ("",), "summary": ("_count", "_sum", "_created")}
        out |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return out


def vigil_series() -> set[str]:
    sample_drift = drift.DriftResult(
        model_name="fraud", model_version=1,
        features=(drift.ColumnDrift("TX_AMOUNT", "m", 0.1, 0.2, True),),
        score=drift.ColumnDrift("score", "m", 0.1, 0.0, False),
        decision=drift.ColumnDrift("decision", "m", 0.1, 0.0, False),
        drifted_features=1, drifted_share=1.0, drift_share=0.5, decision_rate_current=0.1,
        decision_rate_reference=0.1, current_rows=1, reference_rows=1, current_window=None,
        reference="", seconds=0.0, finished_at=datetime.now(UTC))
    sample_live = performance.LivePerformance(
        model_name="fraud", model_version=1,
        days=(performance.DayFigures("2018-06-01", 10, 1, 0.9, 0.5, 0.3, 12.0),),
        auc_roc=0.9, average_precision=0.5, card_precision_at_100=0.3, decision_cost=12.0,
        decision_cost_per_transaction=1.2, transactions=10, frauds=1,
        evaluated={"auc_roc": 0.9, "average_precision": 0.6, "card_precision_at_100": 0.3},
        finished_at=datetime.now(UTC))
    sample_skew = skew.SkewResult("fraud", 10, 0, 0, {"TX_AMOUNT": 0}, None, 0.0,
                                  datetime.now(UTC))
    registries = [REGISTRY, rollout.CONTROLLER_REGISTRY, rollout.MIRROR_REGISTRY,
                  drift.result_registry(sample_drift), performance.live_registry([sample_live]),
                  skew.skew_registry(sample_skew),
                  freshness.materialization_registry("vigil", {"customer_history":
                                                               datetime.now(UTC)})]
    return set().union(*(series_names(r) for r in registries)) | PUSHGATEWAY_SERIES


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load((RULES / "vigil-rules.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for g in groups for rule in g["rules"]}


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", "vigil-rules.yml", cwd=RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 15 rules found" in result.stdout


def test_promtool_rule_tests_pass() -> None:
    result = promtool("test", "rules", "vigil-rules.test.yml", cwd=RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_firing_and_silent_cases() -> None:
    """Each alert fires in some case and stays silent in another: a case expecting no alert,
    or a firing case whose input holds a model that must not fire (exp_alerts must match
    exactly, so promtool fails if it does)."""
    tests = yaml.safe_load((RULES / "vigil-rules.test.yml").read_text())["tests"]
    for alert in rule_expressions():
        fires = silent = False
        for t in tests:
            models = set(re.findall(r'model_name="([^"]+)"',
                                    " ".join(s["series"] for s in t["input_series"])))
            for case in t.get("alert_rule_test", []):
                if case["alertname"] != alert:
                    continue
                fired = {a["exp_labels"].get("model_name") for a in case["exp_alerts"]}
                fires |= bool(case["exp_alerts"])
                silent |= not case["exp_alerts"] or bool(models - fired)
        assert fires, f"{alert}: no case where it fires"
        assert silent, f"{alert}: no case where it stays silent"


def test_rules_name_only_metrics_vigil_exports() -> None:
    known = vigil_series()
    keywords = {"sum", "by", "rate", "increase", "max", "or", "and", "on", "time",
                "histogram_quantile", "absent", "le"}
    for alert, expr in rule_expressions().items():
        without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
        without_labels = re.sub(r"by \([^)]*\)|on \([^)]*\)", "", without_labels)
        names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels)) - keywords
        names = {n for n in names if not re.fullmatch(r"\d+[smhd]?", n)}
        unknown = names - known
        assert not unknown, f"{alert} names metrics Vigil does not export: {unknown}"
        assert names, alert
