"""Grafana dashboards as code: :func:`build` returns each dashboard's JSON model; the committed
``monitoring/dashboards/*.json`` are its output (``python -m monitoring.grafana`` rewrites them;
a test regenerates and compares). The chart ships them as ConfigMaps for Grafana's sidecar.

Every panel queries a Prometheus data source chosen by the ``datasource`` variable, for the
model chosen by ``model_name``; expressions name only metrics Vigil exports (tested).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from vigil import contract as c

HERE: Final = Path(__file__).parent / "dashboards"
DS: Final = {"type": "prometheus", "uid": "${datasource}"}
M: Final = 'model_name="$model_name"'


def _panel(title: str, targets: list[tuple[str, str]], *, unit: str = "short",
           kind: str = "timeseries", description: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"datasource": DS, "expr": expr, "legendFormat": legend,
                     "refId": chr(ord("A") + i)} for i, (expr, legend) in enumerate(targets)],
    }


def _dashboard(uid: str, title: str, panels: list[dict[str, Any]],
               model_query: str) -> dict[str, Any]:
    for i, panel in enumerate(panels):
        panel["id"] = i + 1
        panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}
    return {
        "uid": uid,
        "title": title,
        "tags": ["vigil"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Prometheus"},
            {"name": "model_name", "type": "query", "datasource": DS, "label": "Model",
             "query": {"query": f"label_values({model_query}, model_name)", "refId": "V"},
             "definition": f"label_values({model_query}, model_name)", "refresh": 2},
        ]},
        "panels": panels,
    }


def serving() -> dict[str, Any]:
    r = "$__rate_interval"
    return _dashboard("vigil-serving", "Vigil / Serving", [
        _panel("Requests by outcome", [
            (f"sum by (outcome) (rate(vigil_serving_requests_total{{{M}}}[{r}]))",
             "{{outcome}}")], unit="reqps"),
        _panel("5xx share", [
            (f'sum(rate(vigil_serving_requests_total{{{M},outcome="error"}}[{r}])) / '
             f"sum(rate(vigil_serving_requests_total{{{M}}}[{r}]))", "errors")],
            unit="percentunit"),
        _panel("Request latency", [
            (f"histogram_quantile({q}, sum by (le) (rate("
             f"vigil_serving_request_duration_seconds_bucket{{{M}}}[{r}])))", f"p{p}")
            for q, p in ((0.5, 50), (0.99, 99))], unit="s"),
        _panel("Degraded and shed", [
            (f"sum by (reason) (rate(vigil_serving_degraded_transactions_total{{{M}}}[{r}]))",
             "degraded {{reason}}"),
            (f"sum by (reason) (rate(vigil_serving_shed_requests_total{{{M}}}[{r}]))",
             "shed {{reason}}")], unit="ops"),
        _panel("FRAUD decision share", [
            (f"sum(rate(vigil_serving_transactions_total"
             f'{{{M},decision="{c.FRAUD_DECISION}"}}[{r}])) / '
             f"sum(rate(vigil_serving_transactions_total{{{M}}}[{r}]))", "fraud")],
            unit="percentunit"),
        _panel("Inference log", [
            (f"sum(rate(vigil_serving_inference_log_rows_total{{{M}}}[{r}]))", "rows/s"),
            (f"sum(increase(vigil_serving_inference_log_write_errors_total{{{M}}}[1h]))",
             "write errors (1 h)"),
            (f"sum(increase(vigil_serving_inference_log_dropped_rows_total{{{M}}}[1h]))",
             "dropped rows (1 h)")]),
        _panel("Model age", [
            (f"(time() - max by (model_version) "
             f"(vigil_serving_model_created_timestamp_seconds{{{M}}})) / 86400",
             "version {{model_version}}")], unit="d", kind="stat"),
        _panel("Queue", [(f"sum(vigil_serving_queued_transactions{{{M}}})", "queued")]),
    ], "vigil_serving_model_info")


def features() -> dict[str, Any]:
    r = "$__rate_interval"
    return _dashboard("vigil-features", "Vigil / Features", [
        _panel("Age of the materialized snapshots", [
            ("time() - max by (feature_view) "
             "(vigil_feature_materialized_until_timestamp_seconds)", "{{feature_view}}")],
            unit="s", description="Feast's feature freshness: now minus the event time the "
                                  "online snapshot is as of."),
        _panel("Age of the newest near-real-time append", [
            (f"time() - max(vigil_serving_feature_append_newest_timestamp_seconds{{{M}}})",
             "event time"),
            (f"time() - max(vigil_serving_feature_append_last_success_timestamp_seconds{{{M}}})",
             "since last append")], unit="s"),
        _panel("Histories missing or too old", [
            (f"sum by (entity, status) (rate(vigil_serving_missing_features_total{{{M}}}[{r}]))",
             "{{entity}} {{status}}")], unit="ops"),
        _panel("Online store reads", [
            (f"histogram_quantile(0.99, sum by (le) (rate("
             f"vigil_serving_feature_fetch_duration_seconds_bucket{{{M}}}[{r}])))", "p99")],
            unit="s"),
        _panel("Append failures", [
            (f"sum(rate(vigil_serving_feature_update_failures_total{{{M}}}[{r}]))", "failed"),
            (f"sum(increase(vigil_serving_feature_updates_dropped_total{{{M}}}[1h]))",
             "dropped (1 h)")]),
        _panel("Training/serving skew", [
            (f"max(vigil_skew_mismatch_rate{{{M}}})", "mismatch rate"),
            (f"max by (feature) (vigil_skew_feature_mismatches{{{M}}}) > 0", "{{feature}}")],
            unit="short"),
    ], "vigil_serving_model_info")


def drift() -> dict[str, Any]:
    return _dashboard("vigil-drift", "Vigil / Drift", [
        _panel("Drift score by feature", [
            (f"max by (feature) (vigil_drift_feature_score{{{M}}})", "{{feature}}")]),
        _panel("Drifted features", [
            (f"max by (feature) (vigil_drift_feature_detected{{{M}}}) == 1", "{{feature}}")],
            kind="table"),
        _panel("Drifted share and data set drift", [
            (f"max(vigil_drift_drifted_features_share{{{M}}})", "drifted share"),
            (f"max(vigil_drift_dataset_drift_detected{{{M}}})", "data set drift")],
            unit="percentunit"),
        _panel("Key features (the fewest carrying half the model's gain)", [
            (f"max by (feature) (vigil_drift_key_feature{{{M}}}) * on (feature) "
             f"max by (feature) (vigil_drift_feature_detected{{{M}}})",
             "{{feature}} (1: drifted)"),
            (f"max(vigil_drift_key_feature_drift_detected{{{M}}})", "key feature drift")],
            kind="table"),
        _panel("Score and decisions", [
            (f"max(vigil_drift_score_drift{{{M}}})", "score drift"),
            (f"max(vigil_drift_score_drift_detected{{{M}}})", "score drift detected"),
            (f"max by (dataset) (vigil_drift_decision_rate{{{M}}})",
             "decision rate {{dataset}}")]),
        _panel("Rows compared", [
            (f"max by (dataset) (vigil_drift_rows{{{M}}})", "{{dataset}}")]),
        _panel("Since the last successful drift run", [
            (f"time() - max(vigil_drift_last_success_timestamp_seconds{{{M}}})", "age")],
            unit="s", kind="stat"),
    ], "vigil_drift_rows")


def live_performance() -> dict[str, Any]:
    return _dashboard("vigil-live", "Vigil / Live performance", [
        _panel("Average precision: live vs evaluated", [
            (f"max by (model_version) (vigil_live_average_precision{{{M}}})",
             "live v{{model_version}}"),
            (f"max by (model_version) (vigil_live_evaluated_average_precision{{{M}}})",
             "evaluated v{{model_version}}")]),
        _panel("AUC ROC: live vs evaluated", [
            (f"max by (model_version) (vigil_live_auc_roc{{{M}}})", "live v{{model_version}}"),
            (f"max by (model_version) (vigil_live_evaluated_auc_roc{{{M}}})",
             "evaluated v{{model_version}}")]),
        _panel("Card Precision@100: live vs evaluated", [
            (f"max by (model_version) (vigil_live_card_precision_at_100{{{M}}})",
             "live v{{model_version}}"),
            (f"max by (model_version) (vigil_live_evaluated_card_precision_at_100{{{M}}})",
             "evaluated v{{model_version}}")]),
        _panel("Decision cost per transaction", [
            (f"max by (model_version) (vigil_live_decision_cost_per_transaction{{{M}}})",
             "v{{model_version}}")]),
        _panel("Labelled transactions", [
            (f"max by (model_version) (vigil_live_labelled_transactions{{{M}}})",
             "v{{model_version}}"),
            (f"max by (model_version) (vigil_live_labelled_frauds{{{M}}})",
             "frauds v{{model_version}}")]),
        _panel("Newest labelled day", [
            (f"(time() - max(vigil_live_last_labelled_day_timestamp_seconds{{{M}}})) / 86400",
             "days ago")], unit="d", kind="stat"),
    ], "vigil_live_labelled_transactions")


def rollouts() -> dict[str, Any]:
    return _dashboard("vigil-rollouts", "Vigil / Rollouts", [
        _panel("Canary traffic", [
            (f"max(vigil_rollout_traffic_percent{{{M}}})", "canary %")], unit="percent"),
        _panel("Phase", [
            (f"max by (phase) (vigil_rollout_phase{{{M}}}) == 1", "{{phase}}")], kind="table"),
        _panel("Analysis checks", [
            (f"sum by (check, result) (increase(vigil_rollout_checks_total{{{M}}}[1h]))",
             "{{check}} {{result}}")]),
        _panel("Failed analyses", [
            (f"max(vigil_rollout_failed_analyses{{{M}}})", "failed")]),
        _panel("Versions", [
            (f"max by (primary_version, canary_version, target) (vigil_rollout_info{{{M}}})",
             "primary {{primary_version}} / canary {{canary_version}} ({{target}})")],
            kind="table"),
        _panel("Shadow agreement", [
            (f'sum(rate(vigil_rollout_shadow_transactions_total{{{M},agreement="agree"}}'
             f"[$__rate_interval])) / sum(rate(vigil_rollout_shadow_transactions_total{{{M}}}"
             f"[$__rate_interval]))", "agreement")], unit="percentunit"),
        _panel("Retrains by result (webhook)", [
            (f"sum by (result) (increase(vigil_retrain_runs_total{{{M}}}[1d]))",
             "{{result}}")]),
        _panel("Retrain running", [
            (f"max(vigil_retrain_running{{{M}}})", "running")], kind="stat"),
    ], "vigil_rollout_info")


BUILDERS: Final = {"serving": serving, "features": features, "drift": drift,
                   "live-performance": live_performance, "rollouts": rollouts}


def build() -> dict[str, dict[str, Any]]:
    """File name (without ``.json``) -> dashboard JSON model."""
    return {name: make() for name, make in BUILDERS.items()}


def render(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def write(folder: Path = HERE) -> list[Path]:
    paths = []
    for name, model in build().items():
        path = folder / f"{name}.json"
        path.write_text(render(model), encoding="utf-8")
        paths.append(path)
    return paths


def expressions(model: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in model["panels"] for t in p["targets"]]


if __name__ == "__main__":
    for written in write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(written)
