"""``vigil drift`` end to end: a registered model, its training set, inference logs of undrifted
and drifted (simulator scenario) traffic, a real Pushgateway; what Prometheus would scrape."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from drift_support import (
    FEATURES,
    SERVED_START,
    THRESHOLD,
    TRAIN_END,
    TRAIN_START,
    booster,
    days,
    features,
    scored,
    write_log,
)
from monitoring_env import pushgateway, samples

from feature_store.names import FEATURE_SERVICE
from monitoring import drift
from vigil.data.drift import AMOUNT_INFLATION
from vigil.registry import Registry
from vigil.settings import load_settings

pytestmark = pytest.mark.integration

SERVED_END = date(2018, 6, 13)
WINDOW = f"{SERVED_START}..{SERVED_END}"
M = 'model_name="fraud"'
#: The card's figures: over every test transaction (the live reference) and, lower, under the
#: handbook protocol (known-compromised cards left out).
EVALUATED = {"all_transactions_auc_roc": 0.95, "all_transactions_average_precision": 0.9,
             "all_transactions_card_precision_at_100": 0.3,
             "auc_roc": 0.93, "average_precision": 0.85, "card_precision_at_100": 0.25}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pushgateway(tmp_path_factory.mktemp("pushgateway")) as url:
        yield url


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with the champion, the training features (all days: the job keeps the
    champion's training window) and two inference logs of the served period."""
    home = tmp_path_factory.mktemp("drift_home")
    settings = load_settings(env={"VIGIL_HOME": str(home)})
    card = Registry.from_settings(settings).register_model(
        booster(), name="fraud", threshold=THRESHOLD, feature_service=FEATURE_SERVICE,
        data_range=(TRAIN_START, TRAIN_END), metrics=EVALUATED, alias="champion",
    )
    (home / "reference").mkdir()
    features().to_parquet(home / "reference" / "features.parquet", index=False)
    for name, scenario in (("log_ok", None), ("log_drift", AMOUNT_INFLATION)):
        served = scored(days(features(scenario), SERVED_START, SERVED_END))
        write_log(served, home / name, "fraud", card.version)
    (home / "labels").mkdir()
    for name, scenario in (("ok", None), ("drift", AMOUNT_INFLATION)):
        arrived = days(features(scenario), SERVED_START, date(2018, 6, 9))
        arrived[["TRANSACTION_ID", "TX_FRAUD"]].to_csv(home / "labels" / f"{name}.csv",
                                                       index=False)
    return home


def _drift(run_vigil: Callable[..., object], home: Path, gateway: str, log: str,
           window: str) -> object:
    return run_vigil("drift", "fraud", "--log", home / log, "--reference", home / "reference",
                     "--current", window, "--pushgateway", gateway, "--out", home / "reports")


def test_undrifted_then_drifted_traffic(run_vigil, monkeypatch, home: Path, gateway: str) -> None:
    monkeypatch.setenv("VIGIL_HOME", str(home))
    started = time.time()
    result = _drift(run_vigil, home, gateway, "log_ok", WINDOW)
    assert result.exit_code == 0, result.stderr
    assert "drifted features: 0/" in result.stdout
    got = samples(gateway, "vigil_drift_")
    reference_rows = len(days(features(), TRAIN_START, TRAIN_END))
    current_rows = len(days(features(), SERVED_START, SERVED_END))
    assert got[f'vigil_drift_rows{{dataset="reference",{M}}}'] == reference_rows
    assert got[f'vigil_drift_rows{{dataset="current",{M}}}'] == current_rows
    assert got[f"vigil_drift_dataset_drift_detected{{{M}}}"] == 0
    assert got[f"vigil_drift_score_drift_detected{{{M}}}"] == 0
    detected = {k: v for k, v in got.items() if k.startswith("vigil_drift_feature_detected")}
    assert len(detected) == len(FEATURES) and set(detected.values()) == {0.0}
    assert got[f"vigil_drift_last_success_timestamp_seconds{{{M}}}"] >= started - 1
    assert got[f"vigil_drift_enough_data{{{M}}}"] == 1
    # The key features come from the registered booster's own gain.
    key = drift.key_features(drift.gain_importance(booster()), 0.5)
    assert key and {k for k in got if k.startswith("vigil_drift_key_feature{")} == {
        f'vigil_drift_key_feature{{feature="{f}",{M}}}' for f in key}
    assert got[f"vigil_drift_key_feature_drift_detected{{{M}}}"] == 0
    assert f"key features (50% of the model's gain): {', '.join(key)}; drifted: none" in (
        result.stdout)

    result = _drift(run_vigil, home, gateway, "log_drift", "7d")
    assert result.exit_code == 0, result.stderr
    got = samples(gateway, "vigil_drift_")
    assert got[f'vigil_drift_feature_detected{{feature="TX_AMOUNT",{M}}}'] == 1
    assert got[f'vigil_drift_feature_detected{{feature="TX_DURING_NIGHT",{M}}}'] == 0
    assert got[f"vigil_drift_score_drift_detected{{{M}}}"] == 1
    assert got[f"vigil_drift_drifted_features_share{{{M}}}"] > 0.2
    # 7d: the last seven days up to the newest logged transaction.
    last_week = len(days(features(AMOUNT_INFLATION), date(2018, 6, 7), SERVED_END))
    assert got[f'vigil_drift_rows{{dataset="current",{M}}}'] == last_week
    report = json.loads(sorted((home / "reports" / "fraud").glob("*/drift.json"))[-1].read_text())
    assert "TX_AMOUNT" in report["vigil"]["drifted"]
    assert report["vigil"]["model_version"] == 1
    assert report["vigil"]["key_features"] == list(key)
    assert report["vigil"]["key_feature_drift"] == bool(
        set(key) & set(report["vigil"]["drifted"]))
    assert got[f"vigil_drift_key_feature_drift_detected{{{M}}}"] == int(
        report["vigil"]["key_feature_drift"])


def test_not_enough_data_keeps_the_last_figures(run_vigil, monkeypatch, home: Path,
                                                gateway: str) -> None:
    monkeypatch.setenv("VIGIL_HOME", str(home))
    assert _drift(run_vigil, home, gateway, "log_drift", WINDOW).exit_code == 0
    before = samples(gateway, "vigil_drift_")
    one_day = len(days(features(AMOUNT_INFLATION), SERVED_START, SERVED_START))
    result = _drift(run_vigil, home, gateway, "log_drift", str(SERVED_START))
    assert result.exit_code == 3
    assert f"not enough data: {one_day} current and" in result.stderr
    after = samples(gateway, "vigil_drift_")
    assert after[f"vigil_drift_enough_data{{{M}}}"] == 0
    assert after[f'vigil_drift_rows{{dataset="current",{M}}}'] == one_day
    # Nothing compared: the figures and the last success time are the previous run's.
    for key, value in before.items():
        if not key.startswith(("vigil_drift_rows", "vigil_drift_enough_data",
                               "vigil_drift_last_run_timestamp_seconds")):
            assert after[key] == value, key
    # A window with no rows at all is the same answer, not an error.
    result = _drift(run_vigil, home, gateway, "log_drift", "2019-01-01")
    assert result.exit_code == 3 and "not enough data: 0 current" in result.stderr


@pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")
def test_the_drift_component_runs_under_kfp_local(monkeypatch, home: Path, gateway: str,
                                                  tmp_path: Path) -> None:
    """The thin @dsl.component adapter, run by kfp.local in a subprocess of its own; settings
    from the environment as a CronJob's ConfigMap would give them."""
    from kfp import local

    from components.kfp_components import drift

    for name, value in {
        "VIGIL_SERVING__LOG_ROOT": str(home / "log_drift"),
        "VIGIL_MONITORING__DRIFT_REFERENCE": str(home / "reference"),
        "VIGIL_MONITORING__PUSHGATEWAY_URL": gateway,
    }.items():
        monkeypatch.setenv(name, value)
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "pipeline_root"), raise_on_error=True)
    task = drift(vigil_home=str(home), vigil_config="", model_name="fraud",
                 current_window=WINDOW, reference="")
    result = json.loads(task.outputs["Output"])
    assert result["compared"] and "TX_AMOUNT" in result["drifted"]
    assert Path(task.outputs["report"].path).stat().st_size > 10_000
    quiet = drift(vigil_home=str(home), vigil_config="", model_name="fraud",
                  current_window=str(SERVED_START), reference="")
    result = json.loads(quiet.outputs["Output"])
    assert not result["compared"] and result["reason"].startswith("not enough data")
    got = samples(gateway, "vigil_drift_")
    assert got[f"vigil_drift_enough_data{{{M}}}"] == 0


def test_the_drift_metrics_pass_promtool(home: Path, gateway: str) -> None:
    from monitoring_env import program

    text = httpx.get(f"{gateway}/metrics", timeout=10).text
    text = "\n".join(line for line in text.splitlines()
                     if "vigil_drift_" in line) + "\n"
    assert "vigil_drift_feature_score" in text
    checked = subprocess.run([program("promtool", "prometheus"), "check", "metrics"],
                             input=text, capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_live_performance_is_pushed(run_vigil, monkeypatch, home: Path, gateway: str) -> None:
    monkeypatch.setenv("VIGIL_HOME", str(home))
    result = run_vigil("performance", "fraud", "--log", home / "log_drift", "--labels",
                       home / "labels" / "drift.csv", "--pushgateway", gateway)
    assert result.exit_code == 0, result.stderr
    assert "fraud version 1: " in result.stdout, result.stdout
    assert "(evaluated 0.900; handbook protocol 0.850)" in result.stdout, result.stdout
    got = samples(gateway, "vigil_live_")
    key = f'{M},model_version="1"'
    assert got[f"vigil_live_evaluated_average_precision{{{key}}}"] == 0.9
    live_ap = got[f"vigil_live_average_precision{{{key}}}"]
    assert 0 < live_ap < 0.8  # the live-AP alert's condition holds on drifted traffic
    labelled = len(days(features(AMOUNT_INFLATION), SERVED_START, date(2018, 6, 9)))
    assert got[f"vigil_live_labelled_transactions{{{key}}}"] == labelled
    png = sorted((home / "performance" / "fraud" / "v1").glob("*/performance.png"))[-1]
    assert png.read_bytes()[:4] == b"\x89PNG"
    # Labels for other transactions only: nothing to measure, said so, exit 3.
    (home / "labels" / "none.csv").write_text("TRANSACTION_ID,TX_FRAUD\nnope,1\n")
    result = run_vigil("performance", "fraud", "--log", home / "log_drift", "--labels",
                       home / "labels" / "none.csv")
    assert result.exit_code == 3 and "not enough labels: 0 of" in result.stderr


def test_materialization_freshness_is_pushed(run_vigil, monkeypatch, tiny_daily_dir: Path,
                                             tmp_path: Path, gateway: str) -> None:
    """``vigil materialize`` pushes the event time its snapshots are as of (SQLite online
    store here: no Redis keys are written)."""
    import pandas as pd

    from inference.client import free_port
    from vigil.data.ingest import read_transactions

    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIGIL_FEATURES__PROJECT", "freshness_test")
    monkeypatch.setenv("VIGIL_REDIS__URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    done = run_vigil("featurize", "--transactions", tiny_daily_dir, "--out", tmp_path / "f")
    assert done.exit_code == 0, done.stderr
    started = time.time()
    done = run_vigil("materialize", "--pushgateway", gateway)
    assert done.exit_code == 0, done.stderr
    assert "into feast-sqlite" in done.stdout
    last = read_transactions(tiny_daily_dir).frame["TX_DATETIME"].max()
    got = samples(gateway, "vigil_feature_")
    for view in ("customer_history", "terminal_history"):
        key = f'vigil_feature_materialized_until_timestamp_seconds{{feature_view="{view}",' \
              f'project="freshness_test"}}'
        assert got[key] == pd.Timestamp(last, tz="UTC").timestamp()
    success = got['vigil_feature_materialization_last_success_timestamp_seconds'
                  '{project="freshness_test"}']
    assert started - 1 <= success <= time.time() + 1


def test_rules_and_dashboards_name_series_the_pushgateway_exports(tmp_path: Path) -> None:
    """What the jobs push, scraped from a real Pushgateway, holds every series of theirs the
    alert rules and dashboards query."""
    from metric_names import sample_results, scraped_names, used_names

    from monitoring import drift, freshness, performance, skew

    with pushgateway(tmp_path / "pg") as url:
        sample_drift, sample_live, sample_skew = sample_results()
        drift.push(url, sample_drift)
        performance.push(url, "fraud", [sample_live])
        skew.push(url, sample_skew)
        freshness.push_materialization(url, "vigil", {"customer_history": datetime.now(UTC)})
        exported = scraped_names(httpx.get(f"{url}/metrics", timeout=10).text)
    used = used_names(("vigil_drift_", "vigil_live_", "vigil_skew_", "vigil_feature_",
                       "push_time_seconds"))
    assert len(used) > 20
    assert not used - exported, f"queried but not pushed: {sorted(used - exported)}"


def test_a_real_prometheus_fires_the_drift_alert_on_drifted_traffic_only(
        run_vigil, monkeypatch, home: Path, tmp_path: Path) -> None:
    """The jobs, the Pushgateway, Prometheus and the rule file together: undrifted traffic
    raises no drift alert; drifted traffic (amount inflation) fires VigilDriftDetected."""
    from monitoring_env import alerts, prometheus

    monkeypatch.setenv("VIGIL_HOME", str(home))
    rules = Path(__file__).parents[2] / "monitoring" / "rules" / "vigil-rules.yml"
    with pushgateway(tmp_path / "pg") as pg, \
            prometheus(tmp_path / "prom", [pg.removeprefix("http://")], [rules]) as prom:
        result = run_vigil("drift", "fraud", "--log", home / "log_ok", "--reference",
                           home / "reference", "--current", WINDOW, "--pushgateway", pg,
                           "--out", tmp_path / "reports")
        assert result.exit_code == 0, result.stderr
        deadline = time.monotonic() + 30
        while not httpx.get(f"{prom}/api/v1/query", timeout=10, params={
                "query": "vigil_drift_dataset_drift_detected"}).json()["data"]["result"]:
            assert time.monotonic() < deadline, "Prometheus never scraped the drift metrics"
            time.sleep(0.5)
        time.sleep(3)  # a few rule evaluations on the undrifted figures
        assert alerts(prom, "VigilDriftDetected") == []
        result = run_vigil("drift", "fraud", "--log", home / "log_drift", "--reference",
                           home / "reference", "--current", WINDOW, "--pushgateway", pg,
                           "--out", tmp_path / "reports")
        assert result.exit_code == 0, result.stderr
        deadline = time.monotonic() + 30
        while not (fired := alerts(prom, "VigilDriftDetected")):
            assert time.monotonic() < deadline, "VigilDriftDetected did not fire in 30 s"
            time.sleep(0.5)
        assert fired[0]["labels"]["model_name"] == "fraud"
        assert fired[0]["state"] == "firing"
