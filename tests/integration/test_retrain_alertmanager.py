"""Retraining on alerts, on real processes: a real Alertmanager (Debian
``prometheus-alertmanager``) loaded with ``monitoring/alertmanager.yml`` (the webhook URL and the
timings shortened) and ``vigil retrain-webhook fraud`` as its own process. Alerts posted to
Alertmanager's API reach the webhook, which runs ``vigil run fraud --local`` (kfp.local, the
real pipeline) on the transactions it was given.

The data has three negative amounts, so the run stops at the validation gate (the first step:
the test stays short): the retrain fails, the champion is untouched, and the failure is in
``vigil_retrain_runs_total{result="failed"}`` that ``VigilRetrainFailed`` alerts on. A drift
and a performance alert in one notification start one retrain (the second is recorded busy);
their resolution starts nothing. With a KFP host the same alert creates a KFP run (against a
local server playing the KFP API, as in test_schedule_kfp.py). Then the same path on good small
simulated data: a drift alert retrains and the gate registers the model (about 80 s).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from kfp_env import API, committed_pipeline, running_kfp_api
from monitoring_env import alertmanager, served

from feature_store.online import delete_project_keys
from inference.client import free_port
from vigil import contract as c
from vigil.data.simulate import Simulation, write_daily
from vigil.registry import CHAMPION, Registry
from vigil.settings import load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def am_config(webhook_url: str) -> dict[str, Any]:
    """The committed example with the webhook's URL and second-scale timings."""
    config = yaml.safe_load((ROOT / "monitoring" / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s")
    (retrain_route,) = [r for r in config["route"]["routes"] if r["receiver"] == "vigil-retrain"]
    retrain_route.update(group_wait="1s", group_interval="1s")
    (receiver,) = [r for r in config["receivers"] if r["name"] == "vigil-retrain"]
    receiver["webhook_configs"][0]["url"] = f"{webhook_url}/alerts"
    return config


@pytest.fixture
def bad_data(tmp_path: Path, small_simulation: Simulation) -> Path:
    out = tmp_path / "transactions"
    cfg = small_simulation.config
    write_daily(small_simulation.transactions, out, cfg.start_date, cfg.n_days)
    first = sorted(out.glob("*.parquet"))[0]
    import pandas as pd

    frame = pd.read_parquet(first)
    frame.loc[frame.index[:3], c.TX_AMOUNT] = -10.0
    frame.to_parquet(first, index=False)
    return out


@contextlib.contextmanager
def running_webhook(tmp_path: Path, data: Path, settings: dict[str, Any],
                    *args: str) -> Iterator[str]:
    """``vigil retrain-webhook fraud`` as a process on a free port; stopped by PID."""
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), **settings}))
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIGIL_", "MLFLOW_"))}
    with served([sys.executable, "-m", "vigil_cli", "--config", str(config), "retrain-webhook",
                 "fraud", "--port", str(port), "--transactions", str(data), *args],
                tmp_path / "webhook.log", f"http://127.0.0.1:{port}", "/healthz",
                ready_timeout_s=60, stop_timeout_s=60, env=env, cwd=ROOT) as url:
        yield url


@pytest.fixture
def webhook(tmp_path: Path, bad_data: Path) -> Iterator[str]:
    with running_webhook(tmp_path, bad_data, {}) as url:
        yield url


def post_alerts(am: str, *names: str, resolved: bool = False) -> None:
    now = datetime.now(UTC)
    alerts = []
    for name in names:
        alert: dict[str, Any] = {
            "labels": {"alertname": name, "model_name": "fraud", "severity": "warning"},
            "annotations": {"summary": f"{name} (test)"},
            # Not older than group_wait: Alertmanager would flush an old alert's group at once,
            # before the next alert of the same post joins it.
            "startsAt": now.isoformat(),
        }
        if resolved:
            alert["endsAt"] = now.isoformat()
        alerts.append(alert)
    response = httpx.post(f"{am}/api/v2/alerts", json=alerts, timeout=10)
    assert response.status_code == 200, response.text


def wait_status(webhook: str, done: Any, what: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(f"{webhook}/status", timeout=10).json()
        if done(status):
            return status
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s; status {status}"
        time.sleep(0.3)


def metric(webhook: str, series: str) -> float:
    for line in httpx.get(f"{webhook}/metrics", timeout=10).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not exported")


def test_alertmanager_starts_one_retrain_and_a_failed_one_is_counted(
    tmp_path: Path, webhook: str
) -> None:
    from metric_names import scraped_names, used_names

    assert httpx.post(f"{webhook}/alerts", content=b"{oops", timeout=10).status_code == 400
    with alertmanager(tmp_path / "am", am_config(webhook)) as am:
        post_alerts(am, "VigilDriftDetected", "VigilLiveAPBelowEvaluated")
        status = wait_status(webhook, lambda s: len(s["decisions"]) >= 2,
                             "Alertmanager notified the webhook", 30)
        actions = sorted(d["action"] for d in status["decisions"])
        assert actions == ["busy", "started"], status["decisions"]
        status = wait_status(webhook, lambda s: s["retrains"] and not s["running"],
                             "the retrain ended", 100)
        (retrain,) = status["retrains"]
        assert len(status["decisions"]) == 2, status["decisions"]  # one notification
        assert retrain["result"] == "failed", retrain
        assert "exit 1" in retrain["detail"], retrain
        assert "TX_AMOUNT" in retrain["detail"], retrain
        assert metric(webhook, 'vigil_retrain_runs_total{model_name="fraud",result="failed"}') == 1
        assert metric(webhook, 'vigil_retrain_runs_total{model_name="fraud",'
                               'result="registered"}') == 0
        # The series the rule and the dashboard query are the ones the webhook serves.
        exported = scraped_names(httpx.get(f"{webhook}/metrics", timeout=10).text)
        used = used_names(("vigil_retrain_",))
        assert used and not used - exported, sorted(used - exported)

        # Resolution is recorded and starts nothing.
        post_alerts(am, "VigilDriftDetected", "VigilLiveAPBelowEvaluated", resolved=True)
        status = wait_status(
            webhook, lambda s: sum(d["action"] == "resolved" for d in s["decisions"]) == 2,
            "the resolved notification arrived", 30)
        assert len(status["retrains"]) == 1 and not status["running"]


@pytest.fixture
def feast_project() -> Iterator[str]:
    name = f"vigilretrain_{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        delete_project_keys(client, name)
    finally:
        client.close()


def test_a_drift_alert_retrains_and_registers_a_model(
    tmp_path: Path, small_simulation: Simulation, feast_project: str
) -> None:
    """The same path on good data: the pipeline runs to the end and the gate registers the
    model (the first one: no champion to beat)."""
    data = tmp_path / "good"
    cfg = small_simulation.config
    write_daily(small_simulation.transactions, data, cfg.start_date, cfg.n_days)
    with running_webhook(tmp_path, data, {"features": {"project": feast_project}}) as hook, \
            alertmanager(tmp_path / "am", am_config(hook)) as am:
        post_alerts(am, "VigilDriftDetected")
        status = wait_status(hook, lambda s: s["retrains"] and not s["running"],
                             "the retrain ended", 240)
    (retrain,) = status["retrains"]
    assert retrain["result"] == "registered", retrain
    assert [d["action"] for d in status["decisions"]] == ["started"]
    registry = Registry.from_settings(load_settings(tmp_path / "vigil.yaml"))
    assert registry.get_card("fraud", alias=CHAMPION).version == 1


def test_with_a_kfp_host_an_alert_creates_a_kfp_run(tmp_path: Path) -> None:

    with running_kfp_api() as kfp_api, \
            running_webhook(tmp_path, Path("/mnt/vigil/data/fraud"),
                            {"pipelines": {"kfp_host": kfp_api.url, "experiment": "retrain"}},
                            "--rollout-target", "kserve") as hook, \
            alertmanager(tmp_path / "am", am_config(hook)) as am:
        post_alerts(am, "VigilLiveAPBelowEvaluated")
        status = wait_status(hook, lambda s: s["retrains"] and not s["running"],
                             "the KFP run was created", 90)
    (retrain,) = status["retrains"]
    assert retrain["result"] == "submitted", retrain
    assert kfp_api.errors == []
    assert ("POST", f"{API}/runs") in [(m, p) for m, p, _ in kfp_api.requests]
    (run,) = kfp_api.runs
    assert run["experiment_id"] == kfp_api.experiments["retrain"]
    assert run["pipeline_spec"] == committed_pipeline()
    params = run["runtime_config"]["parameters"]
    assert params["transactions"] == "/mnt/vigil/data/fraud"
    assert params["rollout_target"] == "kserve"
