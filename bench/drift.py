"""The drift job on simulated traffic at the handbook's scale (5,000 customers, 10,000
terminals, about 10k transactions a day), and what retraining on drifted data buys.

The champion is trained as the pipeline's train step trains (``components.train.train_model``:
LightGBM, early stopping and the decision threshold on the validation slice) on days 39-52 (the
pipeline's windows: 14 training days ending in a 3-day validation slice, 7 days of label delay,
then served), after the 30-day windows have filled; from day 60 on, traffic is served undrifted
or drifted by each simulator scenario starting that day.

Detection: the drift job runs once per served day for two weeks on that day's rows
(``--current`` of one day) against the champion's training window, as the daily CronJob would,
with the champion's gain importance naming its key features; the alert is the rule
``VigilDriftDetected`` (data-set drift, key feature drift or score drift). Reported: days of
drifted traffic until the alert fires per scenario (also under the rule without key features),
false alerts on the undrifted weeks (target 0), the job's time for one day and for 1M rows, side
by side with Evidently's stock ``DataDriftPreset`` report on the same data.

Retraining: once the labels of the two drifted weeks have arrived, a challenger is trained the
same way on them (served days 1-14: fit 1-11, validation 12-14), and both models score served
days 22-28 (after the 7-day label delay, days neither trained on). Their live AUC, AP and Card
Precision@100 there come from ``monitoring.performance.measure`` (what ``vigil performance``
reports: every served transaction with its label, no known-compromised cards dropped),
side by side; the undrifted scenario is the control.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd

from components.train import train_model
from components.windows import FIT, SPLIT_COLUMN, VALID, WindowSpec
from feature_store.transforms import DEFAULT_SPEC, batch_features
from monitoring.drift import DECISION, DriftOptions, compare, gain_importance
from monitoring.performance import LivePerformance, measure
from vigil import contract as c
from vigil.data.drift import SCENARIOS, Drift
from vigil.data.simulate import SimulationConfig, simulate
from vigil.registry import MODEL_FILE
from vigil.settings import MonitoringSettings

SERVED_FROM = 60
#: Served days the drift job runs on (one run a day), from SERVED_FROM.
DETECT_DAYS = 14
#: The retrained model trains on served days 1-14; both models are measured on served days
#: 22-28 (the pipeline's 7-day label delay after its training data, then 7 days).
RETRAIN_TEST_DAYS = (SERVED_FROM + 21, SERVED_FROM + 27)
CONFIG = SimulationConfig(n_customers=5_000, n_terminals=10_000, n_days=RETRAIN_TEST_DAYS[1] + 1,
                          seed=13)
#: The pipeline's default windows (train 14 days with a 3-day validation slice, 7 days delay);
#: the champion's test window is served days 1-7, the challenger's served days 22-28.
WINDOWS = WindowSpec(train_days=14, valid_days=3, delay_days=c.LABEL_DELAY_DAYS, test_days=7)
FEATURES = tuple(DEFAULT_SPEC.features)
BIG_ROWS = 1_000_000


def _features(scenario: str | None) -> pd.DataFrame:
    start = CONFIG.start_date + timedelta(days=SERVED_FROM)
    drifts = (Drift(scenario, start),) if scenario else ()
    sim = simulate(dataclasses.replace(CONFIG, drifts=drifts))
    out = batch_features(sim.transactions, DEFAULT_SPEC)
    out["DAY"] = (out[c.TX_DATETIME] - pd.Timestamp(CONFIG.start_date)).dt.days
    return out


@dataclasses.dataclass(frozen=True)
class Model:
    booster: lightgbm.Booster
    threshold: float
    best_iteration: int
    train_days: tuple[int, int]


def _train(frame: pd.DataFrame, test_end_day: int, work: Path) -> Model:
    """The pipeline's train step on the windows that end with a test window on
    ``test_end_day``: fit and validation rows, early stopping and threshold on validation;
    the booster read back from the ``model.txt`` it wrote (what the registry would serve)."""
    spec = dataclasses.replace(WINDOWS, test_end=CONFIG.start_date + timedelta(days=test_end_day))
    windows = spec.resolve(CONFIG.start_date,
                           CONFIG.start_date + timedelta(days=CONFIG.n_days - 1))
    split = windows.split_of(frame[c.TX_DATETIME])
    rows = frame.loc[np.isin(split, (FIT, VALID)), [*FEATURES, c.TX_FRAUD]].copy()
    rows[SPLIT_COLUMN] = split[np.isin(split, (FIT, VALID))]
    folder = work / f"model-{test_end_day}"
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(folder / "dataset.parquet", index=False)
    result = train_model(folder / "dataset.parquet", folder)
    booster = lightgbm.Booster(model_str=(folder / MODEL_FILE).read_text(encoding="utf-8"))
    first = (windows.train_start - CONFIG.start_date).days
    last = (windows.train_end - CONFIG.start_date).days
    return Model(booster, result.threshold, result.best_iteration, (first, last))


def _scored(frame: pd.DataFrame, model: Model) -> pd.DataFrame:
    out = frame.copy()
    out["score"] = model.booster.predict(out[list(FEATURES)].to_numpy(np.float64))
    out[DECISION] = (out["score"] >= model.threshold).astype(np.int64)
    return out


def _live(frame: pd.DataFrame, model: Model, days: tuple[int, int]) -> LivePerformance:
    """``vigil performance``'s figures of ``model`` serving ``days`` (all labels arrived)."""
    served = _scored(frame[frame["DAY"].between(*days)], model)
    log = pd.DataFrame({
        c.TRANSACTION_ID: served[c.TRANSACTION_ID].astype(str),
        c.TX_DATETIME: served[c.TX_DATETIME],
        c.CUSTOMER_ID: served[c.CUSTOMER_ID].astype(str),
        c.TX_AMOUNT: served[c.TX_AMOUNT],
        "score": served["score"],
        "decision": np.where(served[DECISION] == 1, c.FRAUD_DECISION, c.LEGIT_DECISION),
        "model_version": 1,
    })
    labels = pd.DataFrame({c.TRANSACTION_ID: log[c.TRANSACTION_ID],
                           c.TX_FRAUD: served[c.TX_FRAUD].astype(np.int8)})
    mon = MonitoringSettings()
    return measure(log, labels, model_name="fraud", model_version=1, evaluated={},
                   alert_cost=mon.alert_cost, min_labelled=mon.live_min_labelled)


def _figures(perf: LivePerformance) -> dict[str, float | int]:
    return {"auc_roc": round(perf.auc_roc, 4),
            "average_precision": round(perf.average_precision, 4),
            "card_precision_at_100": round(perf.card_precision_at_100, 4),
            "decision_cost": round(perf.decision_cost, 1), "transactions": perf.transactions,
            "frauds": perf.frauds}


def _stock_report(current: pd.DataFrame, reference: pd.DataFrame) -> float:
    """Evidently's stock data drift report on the same columns (the usual way), seconds."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    columns = [*FEATURES, "score", DECISION]
    t0 = time.perf_counter()
    Report([DataDriftPreset()]).run(current_data=current[columns],
                                    reference_data=reference[columns])
    return time.perf_counter() - t0


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vigil-bench-drift-") as tmp:
        return _run(Path(tmp))


def _run(work: Path) -> dict[str, Any]:
    mon = MonitoringSettings()
    options = DriftOptions(method=mon.drift_method, threshold=mon.drift_threshold,
                           drift_share=mon.drift_share, min_rows=mon.drift_min_rows,
                           key_gain_share=mon.drift_key_gain_share)
    t0 = time.perf_counter()
    base = _features(None)
    champion = _train(base, SERVED_FROM + WINDOWS.test_days - 1, work)
    importance = gain_importance(champion.booster)
    reference = _scored(base[base["DAY"].between(*champion.train_days)], champion)
    setup_s = time.perf_counter() - t0
    total_gain = sum(importance.values()) or 1.0
    gain_share = {f: round(g / total_gain, 4) for f, g in
                  sorted(importance.items(), key=lambda kv: -kv[1])}
    print(f"   setup {setup_s:.0f} s: {len(base):,} transactions, champion trained on days "
          f"{champion.train_days} ({champion.best_iteration} trees, threshold "
          f"{champion.threshold:.3g}), reference {len(reference):,} rows", flush=True)

    per_scenario: dict[str, Any] = {}
    retrain: dict[str, Any] = {}
    job_seconds: list[float] = []
    key: tuple[str, ...] = ()
    for scenario in (None, *SCENARIOS):
        name = scenario or "none"
        frame = base if scenario is None else _features(scenario)
        detect = frame["DAY"].between(SERVED_FROM, SERVED_FROM + DETECT_DAYS - 1)
        served = _scored(frame[detect], champion)
        days = []
        for _, current in served.groupby("DAY"):
            result, _ = compare(current, reference, FEATURES, options, model_name="fraud",
                                importance=importance)
            key = result.key_features
            job_seconds.append(result.seconds)
            before = result.dataset_drift or result.score.detected
            days.append({"day": int(current["DAY"].iloc[0]) - SERVED_FROM + 1,
                         "rows": len(current),
                         "drifted_share": round(result.drifted_share, 3),
                         "score_drift": round(result.score.score, 4),
                         "decision_rate": round(result.decision_rate_current, 4),
                         "decision_drift": round(result.decision.score, 4),
                         "alert": before or result.key_feature_drift,
                         "alert_without_key_features": before,
                         "drifted_key_features": result.drifted_key_features(),
                         "drifted": result.drifted()})
        first = next((d["day"] for d in days if d["alert"]), None)
        first_before = next((d["day"] for d in days if d["alert_without_key_features"]), None)
        per_scenario[name] = {"days": days, "first_alert_day": first,
                              "alerts": sum(d["alert"] for d in days),
                              "first_alert_day_without_key_features": first_before}
        print(f"   {name}: first alert on served day {first} ({first_before} without key "
              f"features), {per_scenario[name]['alerts']}/{len(days)} days alerted", flush=True)

        t1 = time.perf_counter()
        challenger = _train(frame, RETRAIN_TEST_DAYS[1], work)
        figures = {who: _figures(_live(frame, model, RETRAIN_TEST_DAYS))
                   for who, model in (("champion", champion), ("retrained", challenger))}
        weeks = _figures(_live(frame, champion, (SERVED_FROM, SERVED_FROM + DETECT_DAYS - 1)))
        retrain[name] = {**figures, "champion_served_days_1_14": weeks,
                         "retrained_on_days": challenger.train_days,
                         "retrained_trees": challenger.best_iteration,
                         "retrained_threshold": round(challenger.threshold, 4),
                         "seconds": round(time.perf_counter() - t1, 1)}
        print(f"   {name}: live AP on served days 22-28, champion "
              f"{figures['champion']['average_precision']:.3f}, retrained "
              f"{figures['retrained']['average_precision']:.3f}", flush=True)

    one_day = _scored(base[base["DAY"] == SERVED_FROM], champion)
    stock_day = _stock_report(one_day, reference)
    big = one_day.sample(n=BIG_ROWS, replace=True, random_state=0).reset_index(drop=True)
    big_result, _ = compare(big, reference, FEATURES, options, model_name="fraud",
                            importance=importance)
    stock_big = _stock_report(big, reference)
    day_s = statistics.median(job_seconds)
    print(f"   one day {day_s:.2f} s (stock {stock_day:.2f} s), 1M rows "
          f"{big_result.seconds:.1f} s (stock {stock_big:.1f} s)", flush=True)

    false_alerts = per_scenario["none"]["alerts"]
    # A more sensitive signal than the alert: more features drifted than on any undrifted day
    # (one undrifted day always "drifts" in TX_DURING_WEEKEND: a day is all weekend or none).
    baseline = max(d["drifted_share"] for d in per_scenario["none"]["days"])
    for s in per_scenario.values():
        s["first_day_above_undrifted_share"] = next(
            (d["day"] for d in s["days"] if d["drifted_share"] > baseline), None)

    def days_or_none(value: int | None) -> int | str:
        return value if value is not None else f"none in {len(per_scenario['none']['days'])}"

    def live_rows(metric: str, label: str) -> list[dict[str, Any]]:
        rows = []
        for name, r in retrain.items():
            old, new = r["champion"][metric], r["retrained"][metric]
            rows.append({"what": f"live {label}, {name}, served days 22-28: champion (trained "
                                 "before) vs retrained on days 1-14",
                         "stock": old, "vigil": new, "ratio": round(new / old, 2) if old else None})
        return rows

    summary = [
        {"what": "false drift alerts, 14 undrifted days", "vigil": false_alerts, "target": "0",
         "met": false_alerts == 0},
        *({"what": f"days of {name} until the drift alert",
           "vigil": days_or_none(s["first_alert_day"]),
           "met": s["first_alert_day"] is not None}
          for name, s in per_scenario.items() if name != "none"),
        *({"what": f"days of {name} until the alert without key features (data set or score)",
           "vigil": days_or_none(s["first_alert_day_without_key_features"])}
          for name, s in per_scenario.items() if name != "none"),
        *({"what": f"days of {name} until more features drift than on any undrifted day",
           "vigil": days_or_none(s["first_day_above_undrifted_share"])}
          for name, s in per_scenario.items() if name != "none"),
        {"what": f"drift job, one day (~{len(one_day) // 1000}k rows), s", "stock": stock_day,
         "vigil": day_s, "ratio": round(day_s / stock_day, 2)},
        {"what": "drift job, 1M rows, s", "stock": stock_big, "vigil": big_result.seconds,
         "ratio": round(big_result.seconds / stock_big, 2)},
        *live_rows("average_precision", "AP"),
        *live_rows("card_precision_at_100", "CP@100"),
    ]
    return {
        "summary": summary,
        "columns": {"stock": "Evidently DataDriftPreset · champion",
                    "vigil": "Vigil · retrained"},
        "targets_met": false_alerts == 0 and all(
            s["first_alert_day"] is not None for n, s in per_scenario.items() if n != "none"),
        "scenarios": per_scenario,
        "retrain": retrain,
        "champion": {"trained_on_days": champion.train_days, "trees": champion.best_iteration,
                     "threshold": round(champion.threshold, 4), "key_features": list(key),
                     "gain_share": gain_share},
        "undrifted_max_drifted_share": baseline,
        "setup_seconds": round(setup_s, 1),
        "reference_rows": len(reference),
        "one_day_rows": len(one_day),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
