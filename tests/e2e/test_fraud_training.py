"""The ``fraud-training`` pipeline end to end through ``kfp.local``, as ``vigil run fraud --local``
runs it: each step a subprocess, the Feast offline store and an MLflow SQLite registry under a
temporary home, Redis on 127.0.0.1 (a unique Feast project, its keys removed afterwards).

1. small simulated data: a model is trained, evaluated and registered as the first champion;
2. the same data with the training window's labels shuffled: the candidate is worse than the
   champion on the same test rows, the gate refuses it, the champion stays;
3. data with negative amounts: the run stops at validation (exit code 1), nothing downstream.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from components.windows import WindowSpec
from feature_store.names import FEATURE_SERVICE
from feature_store.online import delete_project_keys
from pipelines.local import RunSummary, StepEvent, run_local
from pipelines.params import FraudTrainingParams
from vigil import contract as c
from vigil.data.simulate import Simulation, write_daily
from vigil.errors import RegistryError
from vigil.registry import CHAMPION, Registry
from vigil.settings import Settings, load_settings

pytestmark = pytest.mark.e2e

STEPS = ["validate", "featurize", "train", "evaluate"]
ENV_VARS = ("VIGIL_HOME", "VIGIL_CONFIG", "VIGIL_REDIS__URL", "MLFLOW_TRACKING_URI")


@pytest.fixture(scope="module")
def project() -> Iterator[str]:
    name = f"vigile2e_{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        delete_project_keys(client, name)
    finally:
        client.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, project: str) -> Iterator[Path]:
    """A home and a settings file naming it and the unique Feast project; the developer's own
    VIGIL_* / MLFLOW_* variables are cleared for the module."""
    root = tmp_path_factory.mktemp("fraud_training")
    (root / "vigil.yaml").write_text(
        f"home: {root / 'home'}\nfeatures:\n  project: {project}\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV_VARS:
            mp.delenv(var, raising=False)
        yield root


@pytest.fixture(scope="module")
def good_data(workspace: Path, small_simulation: Simulation) -> Path:
    out = workspace / "data" / "good"
    cfg = small_simulation.config
    write_daily(small_simulation.transactions, out, cfg.start_date, cfg.n_days)
    return out


@pytest.fixture(scope="module")
def settings(workspace: Path) -> Settings:
    return load_settings(workspace / "vigil.yaml")


def _run(settings: Settings, workspace: Path, data: Path, **params: object
         ) -> tuple[RunSummary, list[StepEvent]]:
    events: list[StepEvent] = []
    summary = run_local(
        FraudTrainingParams(transactions=str(data), **params),  # type: ignore[arg-type]
        settings=settings,
        progress=events.append,
    )
    return summary, events


@pytest.fixture(scope="module")
def champion_run(settings: Settings, workspace: Path, good_data: Path
                 ) -> tuple[RunSummary, list[StepEvent]]:
    return _run(settings, workspace, good_data)


def test_first_run_registers_the_champion(champion_run, settings):
    summary, events = champion_run
    assert summary.registered, summary.to_text()
    reg = summary.registration
    assert (reg.model_name, reg.version, reg.alias) == ("fraud", 1, CHAMPION)
    ev = summary.evaluation
    assert ev.decision == CHAMPION and ev.champion is None
    assert ev.metrics["average_precision"] >= ev.quality_floor

    # Every step ran, in order, and reported its start, its end and its time.
    assert [s.name for s in summary.steps] == [*STEPS, "register"]
    assert all(s.status == "SUCCESS" and s.work_seconds is not None for s in summary.steps)
    starts = [(e.index, e.step) for e in events if e.kind == "start"]
    assert starts == list(enumerate([*STEPS, "register"], start=1))
    assert any(e.kind == "message" and "through Feast" in e.message for e in events)

    # The registry's champion is this model, with its card and the evaluation report.
    registry = Registry.from_settings(settings)
    card = registry.get_card("fraud", alias=CHAMPION)
    assert card.version == 1
    assert card.feature_service == FEATURE_SERVICE
    assert (card.train_start, card.train_end) == ev.train_range
    assert card.threshold == ev.threshold
    assert card.metrics["average_precision"] == ev.metrics["average_precision"]
    loaded = registry.load_model("fraud")  # sha256 checked
    assert loaded.card == card

    # The report people read, and the offline store the run filled.
    html = summary.report_html.read_text()
    assert "Evaluation report" in html and html.count("data:image/png;base64,") == 4
    assert json.loads((summary.report_html.parent / "metrics.json").read_text())[
        "decision"] == CHAMPION
    data_dir = settings.home.resolve() / "feature_repo" / "data"
    assert (data_dir / "transaction_features.parquet").is_file()
    assert summary.pipeline_root.is_relative_to(settings.home.resolve())

    text = summary.to_text()
    assert "fraud version 1 registered as champion" in text
    assert f"windows     train {ev.data.windows.train_start}" in text


def _shuffle_training_labels(source: Path, out: Path, seed: int = 7) -> None:
    """The same transactions, with labels shuffled across the training window's rows."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    frames = {p.name: pd.read_parquet(p) for p in sorted(source.glob("*.parquet"))}
    everything = pd.concat(frames.values(), keys=frames.keys(), names=["file", "row"])
    times = everything[c.TX_DATETIME]
    windows = WindowSpec().resolve(times.min().date(), times.max().date())  # the run's windows
    train = windows.split_of(everything[c.TX_DATETIME]) != ""
    train &= everything[c.TX_DATETIME].dt.date < windows.delay_start
    labels = everything.loc[train, [c.TX_FRAUD, c.TX_FRAUD_SCENARIO]].to_numpy()
    everything.loc[train, [c.TX_FRAUD, c.TX_FRAUD_SCENARIO]] = labels[rng.permutation(len(labels))]
    for name in frames:
        everything.loc[name].to_parquet(out / name, index=False)


def test_worse_data_is_refused_and_the_champion_stays(champion_run, settings, workspace,
                                                      good_data, run_vigil, monkeypatch):
    worse = workspace / "data" / "shuffled"
    _shuffle_training_labels(good_data, worse)
    monkeypatch.setenv("VIGIL_CONFIG", str(workspace / "vigil.yaml"))
    out = workspace / "worse.json"
    # Through the CLI this time; a floor of 0 leaves the decision to the comparison.
    result = run_vigil("run", "fraud", "--local", "--transactions", worse,
                       "--quality-floor", "0", "--json", out)
    assert result.exit_code == 0, result.stderr
    assert "nothing registered (fraud: champion version 1 unchanged)" in result.stdout
    assert "[5/5] not-registered" in result.stderr

    summary = json.loads(out.read_text())
    ev = summary["evaluation"]
    assert ev["decision"] == "rejected"
    assert ev["champion"]["version"] == 1
    assert ev["metrics"]["average_precision"] < ev["champion"]["metrics"]["average_precision"]
    assert "is not better than champion version 1" in ev["reason"]
    assert summary["registration"] == {"registered": False, "model_name": "fraud",
                                       "version": None, "alias": None, "reason": ev["reason"]}
    assert [s["name"] for s in summary["steps"]] == [*STEPS, "not-registered"]

    registry = Registry.from_settings(settings)
    assert [card.version for card in registry.list_models("fraud")] == [1]
    assert registry.get_card("fraud", alias=CHAMPION).version == 1


def test_invalid_data_stops_at_validation(tmp_path, good_data, project, run_vigil, monkeypatch):
    bad = tmp_path / "bad"
    shutil.copytree(good_data, bad)
    day = bad / "2018-05-10.parquet"
    frame = pd.read_parquet(day)
    frame.loc[frame.index[:3], c.TX_AMOUNT] = -10.0
    frame.to_parquet(day, index=False)
    home = tmp_path / "home"
    config = tmp_path / "vigil.yaml"
    config.write_text(f"home: {home}\nfeatures:\n  project: {project}\n")
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)

    result = run_vigil("--config", config, "run", "fraud", "--local", "--transactions", bad)
    assert result.exit_code == 1, result.stderr
    assert "validation failed: 1 of" in result.stderr
    assert "TX_AMOUNT ≥ 0: 3 unexpected" in result.stderr
    assert "[1/5] validate FAILURE" in result.stderr
    assert "[2/5]" not in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing after validation ran: no features, no model.
    assert not (home / "feature_repo" / "data" / "transaction_features.parquet").exists()
    with pytest.raises(RegistryError, match="no registered model"):
        Registry.from_settings(load_settings(config)).list_models("fraud")
