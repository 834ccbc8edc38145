"""docs/runbook.md walked end to end on real processes, with the commands it shows.

A simulated world whose amounts inflate from ``DRIFT_START`` (``vigil.data.drift``). Two
versions are registered (version 2, the recent promotion, serves). ``vigil serve`` scores two days
of normal traffic and two days of inflated traffic (the inference log). Then the runbook:

1. ``vigil drift`` on the drifted days pushes to a real Pushgateway; a real Prometheus loaded
   with ``monitoring/rules/vigil-rules.yml`` fires ``VigilDriftDetected``; ``drift.json`` names
   the amount features;
3. ``vigil models rollback fraud`` puts version 1 back; ``vigil run fraud --local`` on the
   recent data registers a challenger (version 3); the local rollout stack (``vigil rollout
   stack up``: servers behind HAProxy, its own Prometheus) promotes it with ``vigil rollout``;
4. a drift run on undrifted traffic is pushed and the alert leaves Prometheus.

A second test: the same drift job on undrifted traffic raises no alert.
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
from vigil.registry import CHAMPION, Registry
from vigil.settings import load_settings
from vigil.training import train_lightgbm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from monitoring_env import alerts, prometheus, pushgateway

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "rules" / "vigil-rules.yml"
DRIFT_START = date(2018, 5, 24)
CONFIG = SimulationConfig(n_customers=300, n_terminals=600, n_days=60, seed=11,
                          drifts=(Drift(AMOUNT_INFLATION, DRIFT_START),))
#: Online history as of this instant; later transactions are served.
CUTOFF = pd.Timestamp("2018-05-22")
TRAIN_RANGE = (date(2018, 5, 1), date(2018, 5, 21))
NORMAL_DAYS = "2018-05-22..2018-05-23"
DRIFTED_DAYS = "2018-05-24..2018-05-25"
ALERT = "VigilDriftDetected"


@dataclasses.dataclass(frozen=True)
class World:
    root: Path
    config: Path
    transactions: Path
    reference: Path
    served: pd.DataFrame


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
    train = features[features[c.TX_DATETIME] < CUTOFF]
    reference = root / "reference.parquet"
    train.to_parquet(reference, index=False)
    names = DEFAULT_SPEC.features
    registry = Registry.from_settings(settings)
    for rounds, leaves in ((1, 2), (30, 31)):
        model = train_lightgbm(train, num_boost_round=rounds, feature_names=names,
                               params={"num_threads": 1, "num_leaves": leaves,
                                       "min_child_samples": 20})
        card = registry.register_model(
            model.booster, name="fraud", threshold=0.3, feature_service=FEATURE_SERVICE,
            data_range=TRAIN_RANGE, metrics={"average_precision": 0.5})
        registry.promote("fraud", card.version)  # version 2 is the recent promotion
    tx = sim.transactions
    day = tx[c.TX_DATETIME].dt.strftime("%Y-%m-%d")
    served = tx[day.isin(["2018-05-22", "2018-05-23", "2018-05-24", "2018-05-25"])]
    served = served.sort_values([c.TX_DATETIME, c.TRANSACTION_ID]).reset_index(drop=True)
    try:
        yield World(root, config, transactions, reference, served)
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


def firing(prom: str) -> bool:
    return any(a["state"] == "firing" and a["labels"].get("model_name") == "fraud"
               for a in alerts(prom, ALERT))


@pytest.fixture(scope="module")
def served_log(world: World) -> Path:
    """Version 2 serves the normal day and the inflated days (``vigil serve``)."""
    server = start_server(config=world.config, log_path=world.root / "serve.log")
    try:
        instances = instances_from_frame(world.served)
        for start in range(0, len(instances), 200):
            answer = predict(server.url, instances[start:start + 200], timeout_s=60)
            assert answer["model_version"] == "2", answer
    finally:
        assert server.stop(timeout_s=30) == 0, server.log_tail()
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

        # 3. Act: roll back, then retrain on the recent data.
        result = run_vigil("models", "list", "fraud")
        assert result.exit_code == 0, result.stderr
        result = run_vigil("models", "rollback", "fraud")
        assert result.exit_code == 0, result.stderr
        assert registry.get_card("fraud", alias=CHAMPION).version == 1

        result = run_vigil("run", "fraud", "--local", "--transactions", world.transactions,
                           "--json", world.root / "retrain.json")
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

        # 4. Confirm: undrifted figures pushed, the alert resolves.
        result = run_vigil("drift", "fraud", "--version", "2", "--current", NORMAL_DAYS,
                           "--reference", world.reference, "--pushgateway", gateway,
                           "--out", out)
        assert result.exit_code == 0, result.stderr
        # Two days of normal traffic: a few features may move (weekday mix), the data set and
        # the score do not, which is what the alert looks at.
        assert "data set drift at 0.50: no" in result.stdout, result.stdout
        wait_for(lambda: not alerts(prom, ALERT), f"{ALERT} resolved", 30)


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
        time.sleep(3)  # a few rule evaluations (every second) on them
        assert alerts(prom, ALERT) == []
