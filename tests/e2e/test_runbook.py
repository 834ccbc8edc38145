"""docs/runbook.md walked end to end on real processes, with the commands it shows.

A simulated world whose amounts inflate from ``DRIFT_START`` (``vigil.data.drift``): 2,000
customers and 10,000 terminals, so that fraud is about as rare as in the handbook's world (1.1%
of transactions). In the smaller world this test used before (300 customers, 600 terminals) 11%
of transactions are frauds, mostly at compromised terminals; the few genuine payments inflated
past 220 move live AP little (0.76 -> 0.72 on the drifted days): the alert cannot fire there.
Two versions are registered, each with its evaluation on a held-out pre-drift week as the
pipeline's evaluate step does it (a label-delay gap; the handbook figures without the cards
known to be compromised, and the live reference over every transaction of the week); version
2, the recent promotion, serves. ``vigil serve`` scores two days of normal traffic and two days of
inflated traffic (the inference log). Then the runbook:

1. ``vigil drift`` on the drifted days pushes to a real Pushgateway; a real Prometheus loaded
   with ``monitoring/rules/vigil-rules.yml`` fires ``VigilDriftDetected``; ``drift.json`` names
   the amount features;
2. the served days' labels arrive (the simulator's ``TX_FRAUD`` of the served transactions);
   ``vigil performance`` pushes version 2's live figures and ``VigilLiveAPBelowEvaluated`` fires
   for version 2: its live AP is more than 0.1 below its evaluated AP (over every transaction
   of its test week, like the live figure);
3. ``vigil models rollback fraud`` puts version 1 back; ``vigil run fraud --local`` on the
   recent data (the drifted weeks) registers a challenger (version 3); the local rollout stack
   (``vigil rollout stack up``: servers behind HAProxy, its own Prometheus) promotes it with
   ``vigil rollout``. The retrain's training window starts 60 days into the drift, once the
   customer windows of its rows (up to 60 days back) hold inflated amounts only (see
   ``RETRAIN_TEST_END``);
4. time passes (the online store materialized later): version 3 serves the two days after its
   test window; ``vigil drift --current 1d`` against its training set finds no drift and the
   drift alert leaves Prometheus; their labels arrive, ``vigil performance --version 3``
   replaces the live figures and the live-performance alert leaves Prometheus too.

A second test: the same jobs on undrifted traffic (the normal days and their labels) raise
neither alert.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import redis
import yaml

from feature_store.config import StoreConfig
from feature_store.jobs import featurize, materialize
from feature_store.names import FEATURE_SERVICE
from feature_store.transforms import DEFAULT_SPEC
from inference.client import free_port, instances_from_frame, predict, start_server
from rollout.local import load_stack
from rollout.traffic import Traffic, request_bodies
from vigil import contract as c
from vigil.data.drift import AMOUNT_INFLATION, Drift
from vigil.data.simulate import SimulationConfig, simulate, write_daily
from vigil.evaluation.metrics import (
    ALL_TRANSACTIONS,
    SCORE_COLUMN,
    drop_known_compromised,
    evaluate,
)
from vigil.registry import CHAMPION, Registry
from vigil.settings import load_settings
from vigil.training import train_lightgbm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from monitoring_env import alerts, prometheus, pushgateway

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "rules" / "vigil-rules.yml"
DRIFT_START = date(2018, 5, 24)
#: Seed 11, 143 days (to 2018-08-21: the retrain below needs the drift 87 days old). In this
#: world (batch features, which the served scores match) version 2's live AP on the four served
#: days is 0.16 below its evaluated AP over every transaction of its test week, on the two
#: normal days alone 0.03 above it; version 3's on its two served days 0.06 above its own.
#: Seeds 13 and 15 behave alike; seed 14 (this test's seed in an 83-day world) puts version 3's
#: live AP 0.10 below its evaluation. A two-day AP moves by several hundredths with ~70 frauds.
CONFIG = SimulationConfig(n_customers=2_000, n_terminals=10_000, n_days=143, seed=11,
                          drifts=(Drift(AMOUNT_INFLATION, DRIFT_START),))
#: Version 2: fitted on FIT, stopped early on VALID, evaluated on TEST (after a 7-day gap).
FIT = ("2018-04-24", "2018-05-04")
VALID = ("2018-05-05", "2018-05-07")
TEST = ("2018-05-15", "2018-05-21")
TRAIN_RANGE = (date(2018, 4, 24), date(2018, 5, 7))
#: Online history as of this instant; later transactions are served.
CUTOFF = pd.Timestamp("2018-05-22")
NORMAL_DAYS = "2018-05-22..2018-05-23"
DRIFTED_DAYS = "2018-05-24..2018-05-25"
#: The retrain's test window ends here; the new champion serves the two days after it, the online
#: store materialized as of ``LATER_CUTOFF``. Its training window (the 14 days that end 14 days
#: before, 2018-07-23..08-05) starts 60 days after the drift: every training row's customer
#: windows (30 days, and the (t - 60, t - 14] baseline of the lagged ratios) lie in the inflated
#: world, as do the served days'. Retrained earlier, with windows still straddling the drift's
#: start, the model's key features (the 30-day amount ratio, the 7-day max against the baseline)
#: keep moving after its training and its own drift run alerts (docs/runbook.md, step 3). In this
#: world, Wasserstein distances (threshold 0.1) of those two on the retrained model's served
#: days: --test-end 06-20 (trained on drift days 0-13) 0.44-0.46 and 0.21-0.22; 07-20 (days
#: 30-43) 0.02-0.04 and 0.31-0.32; 08-10 (days 51-64) 0.02-0.03 and 0.05-0.06; 08-19 (days
#: 60-73, this test) 0.01-0.02 and 0.03 (batch features, the pipeline's training reproduced).
RETRAIN_TEST_END = "2018-08-19"
LATER_CUTOFF = pd.Timestamp("2018-08-20")
LATER_DAYS = ("2018-08-20", "2018-08-21")
ALERT = "VigilDriftDetected"
LIVE_ALERT = "VigilLiveAPBelowEvaluated"
#: The rule's bound (monitoring/rules/vigil-rules.yml).
LIVE_AP_BOUND = 0.1


@dataclasses.dataclass(frozen=True)
class World:
    root: Path
    config: Path
    transactions: Path
    reference: Path
    #: Raw transactions (with the simulator's TX_FRAUD) version 2 serves; later ones.
    served: pd.DataFrame
    later: pd.DataFrame
    #: Everything simulated (for the later materialization).
    simulated: pd.DataFrame
    store: StoreConfig


def days_of(frame: pd.DataFrame, first: str, last: str) -> pd.DataFrame:
    day = frame[c.TX_DATETIME].dt.strftime("%Y-%m-%d")
    return frame[(day >= first) & (day <= last)]


def evaluated_metrics(booster: Any, features: pd.DataFrame) -> dict[str, float]:
    """The pipeline's evaluate step on TEST: the handbook protocol (cards known to be
    compromised, a fraud on a day <= t - delay - 1 since the first training day, removed; AUC,
    AP, CP@100) and the same over every test transaction (``all_transactions_*``, the reference
    the live job compares with)."""
    gap_end = (pd.Timestamp(TEST[0]) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    history = days_of(features, FIT[0], gap_end)
    test_all = days_of(features, *TEST)
    test_all = test_all.assign(**{SCORE_COLUMN: booster.predict(
        test_all[list(DEFAULT_SPEC.features)].to_numpy(np.float64))})
    test = drop_known_compromised(test_all, history, c.LABEL_DELAY_DAYS)
    return {**{k: float(v) for k, v in evaluate(test).to_dict().items()},
            **{ALL_TRANSACTIONS + k: float(v) for k, v in evaluate(test_all).to_dict().items()}}


def write_labels(frame: pd.DataFrame, path: Path) -> Path:
    """The labels that arrived for ``frame``'s transactions: TRANSACTION_ID, TX_FRAUD."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[[c.TRANSACTION_ID, c.TX_FRAUD]].to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("runbook")
    project = f"vigilrunbook_{uuid.uuid4().hex[:10]}"
    ports = {"port": free_port(), "prometheus_port": free_port(),
             "pushgateway_port": free_port()}
    config = root / "vigil.yaml"
    config.write_text(yaml.safe_dump({
        "home": str(root / "home"),
        "redis": {"url": "redis://127.0.0.1:6379/0", "timeout_ms": 250},
        "features": {"project": project},
        "monitoring": {"drift_min_rows": 200},
        "rollout": {
            "local": {**ports, "scrape_interval_s": 0.5, "ready_timeout_s": 120},
            "min_requests": 5, "min_transactions": 50,
            # Version 1 is a deliberately weak model: the retrained one scores differently.
            "max_score_psi": 100.0, "max_decision_rate_diff": 1.0,
            "p99_slack_ms": 500, "max_p99_ms": 5000,
        },
    }))
    sim = simulate(CONFIG)
    transactions = root / "transactions"
    write_daily(sim.transactions, transactions, CONFIG.start_date, CONFIG.n_days)
    settings = load_settings(config, env={})
    store = StoreConfig.from_settings(settings)
    features, _ = featurize(sim.transactions, root / "features", store=store,
                            cutoff=CUTOFF.to_pydatetime())
    materialize(store)
    start = pd.Timestamp(CONFIG.start_date)
    features[c.TX_TIME_DAYS] = (features[c.TX_DATETIME].dt.floor("D") - start).dt.days
    fit, valid = days_of(features, *FIT), days_of(features, *VALID)
    reference = root / "reference.parquet"  # the served model's training set
    pd.concat([fit, valid]).to_parquet(reference, index=False)
    names = DEFAULT_SPEC.features
    registry = Registry.from_settings(settings)
    # Version 1: a deliberately weak model (one split); version 2: the recent promotion.
    for model in (train_lightgbm(fit, num_boost_round=1, feature_names=names,
                                 params={"num_threads": 1, "num_leaves": 2}),
                  train_lightgbm(fit, valid, feature_names=names, params={"num_threads": 1})):
        card = registry.register_model(
            model.booster, name="fraud", threshold=0.3, feature_service=FEATURE_SERVICE,
            data_range=TRAIN_RANGE, metrics=evaluated_metrics(model.booster, features))
        registry.promote("fraud", card.version)
    tx = sim.transactions.sort_values([c.TX_DATETIME, c.TRANSACTION_ID])
    served = days_of(tx, NORMAL_DAYS[:10], DRIFTED_DAYS[-10:]).reset_index(drop=True)
    later = days_of(tx, *LATER_DAYS).reset_index(drop=True)
    try:
        yield World(root, config, transactions, reference, served, later, sim.transactions,
                    store)
    finally:
        from feature_store.online import delete_project_keys

        client = redis.Redis(host="127.0.0.1", port=6379)
        try:
            delete_project_keys(client, project)
        finally:
            client.close()


def wait_for(check: Callable[[], object], what: str, timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.5)


def firing(prom: str, name: str = ALERT) -> list[dict[str, Any]]:
    return [a for a in alerts(prom, name)
            if a["state"] == "firing" and a["labels"].get("model_name") == "fraud"]


def serve(world: World, frame: pd.DataFrame, version: str, log_name: str) -> None:
    """``vigil serve`` (the champion) scores ``frame`` in order; stopped, its log flushed."""
    server = start_server(config=world.config, log_path=world.root / log_name)
    try:
        instances = instances_from_frame(frame)
        for start in range(0, len(instances), 200):
            answer = predict(server.url, instances[start:start + 200], timeout_s=60)
            assert answer["model_version"] == version, answer
    finally:
        assert server.stop(timeout_s=30) == 0, server.log_tail()


def live_performance(run_vigil: Callable[..., Any], labels: Path, gateway: str, out: Path,
                     version: int) -> dict[str, Any]:
    """``vigil performance`` on the labels that arrived; the measured version's JSON."""
    result = run_vigil("performance", "fraud", "--labels", labels, "--version", str(version),
                       "--pushgateway", gateway, "--out", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"fraud version {version}: " in result.stdout, result.stdout
    found = sorted((out / "fraud" / f"v{version}").glob("*/performance.json"))
    return dict(json.loads(found[-1].read_text()))


@pytest.fixture(scope="module")
def served_log(world: World) -> Path:
    """Version 2 serves the normal days and the inflated days (``vigil serve``)."""
    serve(world, world.served, "2", "serve.log")
    log = world.root / "home" / "inference_log" / "fraud"
    assert any(log.rglob("*.parquet")), f"no inference log under {log}"
    return log


def test_the_runbook(world: World, served_log: Path, run_vigil: Callable[..., Any],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_CONFIG", str(world.config))
    for var in ("VIGIL_HOME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings(world.config, env={})
    registry = Registry.from_settings(settings)
    out = world.root / "drift"
    notes: list[str] = []  # printed at the end (run_vigil reads what is printed before it)
    with pushgateway(world.root / "pg") as gateway, \
            prometheus(world.root / "prom", [gateway.removeprefix("http://")], [RULES]) as prom:
        # 1. Diagnose: the drift job on the drifted days fires the alert.
        result = run_vigil("drift", "fraud", "--current", DRIFTED_DAYS, "--reference",
                           world.reference, "--pushgateway", gateway, "--out", out)
        assert result.exit_code == 0, result.stderr
        wait_for(lambda: firing(prom), f"{ALERT} firing", 30)
        report = json.loads(sorted((out / "fraud").glob("*/drift.json"))[-1].read_text())
        assert "TX_AMOUNT" in report["vigil"]["drifted"], report["vigil"]["drifted"]
        assert "TX_DURING_NIGHT" not in report["vigil"]["drifted"]
        assert report["vigil"]["model_version"] == 2
        assert report["vigil"]["drifted_key_features"], report["vigil"]["key_features"]
        notes.append(f"{ALERT} firing for version 2: {len(report['vigil']['drifted'])} features "
                     f"drifted, key features {report['vigil']['key_features']}, drifted "
                     f"{report['vigil']['drifted_key_features']}")

        # 2. The served days' labels arrive: version 2's live AP is far below its evaluation.
        labels = write_labels(world.served, world.root / "labels" / "v2.parquet")
        pushed = time.monotonic()
        live = live_performance(run_vigil, labels, gateway, world.root / "performance", 2)
        ap, evaluated_ap = live["average_precision"], live["evaluated"]["average_precision"]
        assert live["transactions"] == len(world.served), live
        assert ap < evaluated_ap - LIVE_AP_BOUND, (ap, evaluated_ap)
        fired = wait_for(lambda: firing(prom, LIVE_ALERT), f"{LIVE_ALERT} firing", 30)
        assert isinstance(fired, list)
        assert {a["labels"]["model_version"] for a in fired} == {"2"}, fired
        notes.append(f"{LIVE_ALERT} firing for version 2 {time.monotonic() - pushed:.1f} s "
                     f"after the push: live AP {ap:.3f}, evaluated {evaluated_ap:.3f} (handbook "
                     f"{live['evaluated_handbook']['average_precision']:.3f}) "
                     f"({live['transactions']} labelled transactions, {live['frauds']} frauds)")

        # 3. Act: roll back, then retrain on the recent data.
        result = run_vigil("models", "list", "fraud")
        assert result.exit_code == 0, result.stderr
        result = run_vigil("models", "rollback", "fraud")
        assert result.exit_code == 0, result.stderr
        assert registry.get_card("fraud", alias=CHAMPION).version == 1

        result = run_vigil("run", "fraud", "--local", "--transactions", world.transactions,
                           "--test-end", RETRAIN_TEST_END, "--json", world.root / "retrain.json")
        assert result.exit_code == 0, result.stderr
        summary = json.loads((world.root / "retrain.json").read_text())
        assert summary["registration"]["registered"], summary["registration"]
        challenger = summary["registration"]["version"]
        assert challenger == 3 and summary["registration"]["alias"] == "challenger", summary

        # The rollout on the local stack (it serves the champion, version 1).
        result = run_vigil("rollout", "stack", "up")
        assert result.exit_code == 0, result.stderr
        try:
            stack = load_stack(settings)
            assert stack is not None
            bodies = request_bodies(world.served, 32)
            with Traffic(stack.url, bodies, clients=2, pause_s=0.02):
                result = run_vigil("rollout", "fraud", "--version", str(challenger),
                                   "--target", "local", "--steps", "100", "--interval", "3s",
                                   "--threshold", "3")
            assert result.exit_code == 0, result.stdout + result.stderr
            status = run_vigil("rollout", "status", "fraud", "--json")
            state = json.loads(status.stdout)["rollout"]
            assert (state["phase"], state["version"]) == ("promoted", challenger), status.stdout
            history = run_vigil("rollout", "history", "fraud")
            assert history.exit_code == 0 and "promoted" in history.stdout, history.stdout
        finally:
            down = run_vigil("rollout", "stack", "down")
        assert down.exit_code == 0, down.stderr
        assert registry.get_card("fraud", alias=CHAMPION).version == challenger

        # 4. Confirm. Time passes: the platform's materialization brings the online store to
        # the day after the retrain's test window; the new champion serves that day and the next.
        featurize(world.simulated, world.root / "features_later", store=world.store,
                  cutoff=LATER_CUTOFF.to_pydatetime())
        materialize(world.store)
        serve(world, world.later, str(challenger), "serve_later.log")
        # The drift job on its last day against its training set (the card's window of the
        # features): the world is still inflated, so is the training set, and the customer
        # windows of both are settled in it: no key feature drifts, the alert resolves.
        result = run_vigil("drift", "fraud", "--current", "1d", "--reference",
                           world.root / "features", "--pushgateway", gateway, "--out", out)
        assert result.exit_code == 0, result.stderr
        # One day against two weeks: a few features may move (weekday mix); the data set, the
        # key features and the score do not, which is what the alert looks at.
        assert "data set drift at 0.50: no" in result.stdout, result.stdout
        report = json.loads(sorted((out / "fraud").glob("*/drift.json"))[-1].read_text())
        assert report["vigil"]["model_version"] == challenger, report["vigil"]
        assert report["vigil"]["key_features"], report["vigil"]
        assert report["vigil"]["drifted_key_features"] == [], report["vigil"]
        assert not report["vigil"]["score"]["detected"], report["vigil"]["score"]
        wait_for(lambda: not alerts(prom, ALERT), f"{ALERT} resolved", 30)
        notes.append(f"{ALERT} resolved for version {challenger}: key features "
                     f"{report['vigil']['key_features']} not drifted, "
                     f"{len(report['vigil']['drifted'])} features drifted")

        # Their labels arrive: the new champion's live figures replace version 2's.
        labels = write_labels(world.later, world.root / "labels" / "v3.parquet")
        assert firing(prom, LIVE_ALERT), "the live-performance alert stays until new figures"
        pushed = time.monotonic()
        live = live_performance(run_vigil, labels, gateway, world.root / "performance",
                                challenger)
        ap, evaluated_ap = live["average_precision"], live["evaluated"]["average_precision"]
        assert live["transactions"] == len(world.later), live
        assert ap >= evaluated_ap - LIVE_AP_BOUND, (ap, evaluated_ap)
        wait_for(lambda: not alerts(prom, LIVE_ALERT), f"{LIVE_ALERT} resolved", 30)
        notes.append(f"{LIVE_ALERT} resolved {time.monotonic() - pushed:.1f} s after the push: "
                     f"version {challenger} live AP {ap:.3f}, evaluated {evaluated_ap:.3f} "
                     f"(handbook {live['evaluated_handbook']['average_precision']:.3f}) "
                     f"({live['transactions']} labelled transactions, {live['frauds']} frauds)")
        print("\n".join(notes))


def test_undrifted_traffic_raises_no_alert(world: World, served_log: Path,
                                           run_vigil: Callable[..., Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_CONFIG", str(world.config))
    with pushgateway(world.root / "pg2") as gateway, \
            prometheus(world.root / "prom2", [gateway.removeprefix("http://")], [RULES]) as prom:
        result = run_vigil("drift", "fraud", "--version", "2", "--current", NORMAL_DAYS,
                           "--reference", world.reference, "--pushgateway", gateway,
                           "--out", world.root / "drift2")
        assert result.exit_code == 0, result.stderr
        # Prometheus scraped the pushed figures and evaluated the rule on them.
        query = f"{prom}/api/v1/query"

        def scraped() -> bool:
            body = httpx.get(query, params={"query": "vigil_drift_dataset_drift_detected"},
                             timeout=10).json()
            return bool(body["data"]["result"])

        wait_for(scraped, "Prometheus scraped the drift figures", 30)
        # The normal days' labels arrive: version 2's live figures on undrifted traffic.
        normal = days_of(world.served, NORMAL_DAYS[:10], NORMAL_DAYS[-10:])
        labels = write_labels(normal, world.root / "labels" / "normal.parquet")
        live = live_performance(run_vigil, labels, gateway, world.root / "performance2", 2)
        assert live["transactions"] == len(normal), live

        def scraped_live() -> bool:
            body = httpx.get(query, params={"query": "vigil_live_average_precision"},
                             timeout=10).json()
            return bool(body["data"]["result"])

        wait_for(scraped_live, "Prometheus scraped the live figures", 30)
        time.sleep(3)  # a few rule evaluations (every second) on them
        assert alerts(prom, ALERT) == []
        assert alerts(prom, LIVE_ALERT) == []
        print(f"undrifted: version 2 live AP {live['average_precision']:.3f}, evaluated "
              f"{live['evaluated']['average_precision']:.3f} (handbook "
              f"{live['evaluated_handbook']['average_precision']:.3f}); no alert")
