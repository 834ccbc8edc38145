"""The training pipeline's steps as plain functions, without Kubeflow.

One module-scoped chain (featurize -> train) on the small simulation feeds the evaluate and
register tests; each of those gets its own registry (a fresh MLflow SQLite file).
"""

from __future__ import annotations

import json
import urllib.parse
from datetime import date
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from components.evaluate import current_champion, evaluate_model, ui_metrics
from components.featurize import DATASET_KEYS, featurize_data
from components.gate import decide, explain_refusal
from components.register import register_candidate
from components.results import ChampionScores, Evaluation, Featurization, Registration, to_json
from components.runtime import EVENT_PREFIX, parse_event, step, step_settings
from components.train import TRAINING_FILE, TrainingResult, parse_params, train_model
from components.validate import validate_data, validation_config
from components.windows import (
    DELAY,
    FIT,
    SPLIT_COLUMN,
    TEST,
    VALID,
    EvaluationWindows,
    WindowSpec,
)
from feature_store.names import FEATURE_SERVICE
from feature_store.transforms import DEFAULT_SPEC, batch_features
from vigil import contract as c
from vigil.data.simulate import Simulation, write_daily
from vigil.errors import (
    ConfigError,
    DataError,
    ModelIntegrityError,
    RegistryError,
    ValidationFailed,
    VigilError,
)
from vigil.evaluation.metrics import ALL_TRANSACTIONS, METRICS, drop_known_compromised, evaluate
from vigil.evaluation.report import IMPORTANCE_PNG, METRICS_JSON, PR_PNG, REPORT_HTML, ROC_PNG
from vigil.registry import CHALLENGER, CHAMPION, MODEL_FILE, Registry
from vigil.settings import Settings

pytestmark = pytest.mark.unit

FEATURES = DEFAULT_SPEC.features
#: No Redis answers here: the feature store falls back to SQLite and the tests stay hermetic.
NO_REDIS = "redis://127.0.0.1:1/0"
#: Windows that fit the 60-day small simulation with room for 30-day feature history.
SPEC = WindowSpec(train_days=14, valid_days=4, delay_days=7, test_days=7)


def _settings(home: Path, project: str = "vigil_unit") -> Settings:
    return Settings.model_validate(
        {"home": home, "redis": {"url": NO_REDIS}, "features": {"project": project}}
    )


# ----------------------------------------------------------------------------- windows


def test_windows_are_anchored_on_the_last_day_with_a_delay_gap():
    w = WindowSpec(train_days=14, valid_days=3, delay_days=7, test_days=7).resolve(
        date(2018, 4, 1), date(2018, 5, 30)
    )
    assert w == EvaluationWindows(
        train_start=date(2018, 5, 3),
        valid_start=date(2018, 5, 14),
        delay_start=date(2018, 5, 17),
        test_start=date(2018, 5, 24),
        test_end=date(2018, 5, 30),
    )
    assert w.train_end == date(2018, 5, 16)
    assert w.delay_days == 7
    stamps = pd.Series(pd.to_datetime([
        "2018-05-02 23:59:59", "2018-05-03 00:00:00", "2018-05-13 23:59:59", "2018-05-14 00:00:00",
        "2018-05-16 23:59:59", "2018-05-17 00:00:00", "2018-05-23 23:59:59", "2018-05-24 00:00:00",
        "2018-05-30 23:59:59", "2018-05-31 00:00:00",
    ]))
    assert list(w.split_of(stamps)) == [
        "", FIT, FIT, VALID, VALID, DELAY, DELAY, TEST, TEST, ""
    ]
    assert EvaluationWindows.from_dict(w.to_dict()) == w


def test_test_end_gives_the_handbook_layout():
    # Chapter 3: train 7 days from 2018-07-25, delay 7 days, test 7 days.
    spec = WindowSpec.from_params(7, 2, 7, 7, "2018-08-14")
    w = spec.resolve(date(2018, 4, 1), date(2018, 9, 30))
    assert (w.train_start, w.valid_start, w.delay_start, w.test_start, w.test_end) == (
        date(2018, 7, 25), date(2018, 7, 30), date(2018, 8, 1), date(2018, 8, 8),
        date(2018, 8, 14),
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, 1, 7, 7, ""), "train_days must be >= 2"),
        ((7, 7, 7, 7, ""), "valid_days must be >= 1 and < train_days"),
        ((7, 0, 7, 7, ""), "valid_days must be >= 1"),
        ((7, 2, -1, 7, ""), "delay_days must be >= 0"),
        ((7, 2, 7, 0, ""), "test_days must be >= 1"),
        ((7, 2, 7, 7, "31/07/2018"), "test_end must be YYYY-MM-DD"),
    ],
)
def test_invalid_window_parameters(args, message):
    with pytest.raises(ConfigError, match=message):
        WindowSpec.from_params(*args)


def test_windows_longer_than_the_data_are_a_data_error():
    with pytest.raises(DataError, match=r"covers 2018-04-01 \.\. 2018-04-20 \(20 days\).*"
                                        r"train 14 \+ delay 7 \+ test 7"):
        WindowSpec().resolve(date(2018, 4, 1), date(2018, 4, 20))
    with pytest.raises(DataError, match="windows need"):
        WindowSpec(test_end=date(2018, 6, 1)).resolve(date(2018, 4, 1), date(2018, 5, 30))


# ----------------------------------------------------------------------------- the gate


M = {"auc_roc": 0.87, "average_precision": 0.60, "card_precision_at_100": 0.28}


def test_gate_without_champion_uses_the_quality_floor():
    assert decide(M, None, metric="average_precision", quality_floor=0.5).decision == CHAMPION
    gate = decide(M, None, metric="average_precision", quality_floor=0.65)
    assert gate.decision == "rejected"
    assert gate.reason == "average_precision 0.6000 is below the quality floor 0.6500"


def test_gate_with_champion_needs_a_strictly_better_model():
    champion = ChampionScores(version=4, metrics={**M, "average_precision": 0.55})
    better = decide(M, champion, metric="average_precision", quality_floor=0.3)
    assert (better.decision, better.reason) == (
        CHALLENGER, "average_precision 0.6000 beats champion version 4 (0.5500)"
    )
    tie = decide(M, ChampionScores(4, M), metric="average_precision", quality_floor=0.3)
    assert tie.decision == "rejected"
    assert tie.reason == "average_precision 0.6000 is not better than champion version 4 (0.6000)"
    margin = decide(M, champion, metric="average_precision", quality_floor=0.3,
                    min_improvement=0.05)
    assert margin.decision == "rejected"  # 0.60 is not > 0.55 + 0.05
    # The floor holds whether or not there is a champion.
    assert decide(M, champion, metric="average_precision", quality_floor=0.7).decision == (
        "rejected"
    )
    # Another metric decides differently on the same numbers.
    worse_cp = ChampionScores(4, {**M, "card_precision_at_100": 0.30})
    assert decide(M, worse_cp, metric="card_precision_at_100", quality_floor=0).decision == (
        "rejected"
    )
    assert decide(M, worse_cp, metric="average_precision", quality_floor=0).decision == (
        "rejected"
    )


def test_gate_rejects_unknown_metrics_and_negative_margins():
    with pytest.raises(ConfigError, match="choose one of"):
        decide(M, None, metric="accuracy", quality_floor=0)
    with pytest.raises(ConfigError, match="min_improvement"):
        decide(M, None, metric="auc_roc", quality_floor=0, min_improvement=-0.1)
    nan = {**M, "average_precision": float("nan")}
    assert decide(nan, None, metric="average_precision", quality_floor=0).decision == "rejected"


# ----------------------------------------------------------------------------- runtime


def test_step_reports_its_time_and_typed_errors(capsys):
    with step("train"):
        print("working")
    with pytest.raises(DataError), step("featurize"):
        raise DataError("no rows", file="x.parquet")
    with pytest.raises(KeyError), step("evaluate"):
        raise KeyError("bug")
    parsed = [parse_event(line) for line in capsys.readouterr().out.splitlines()]
    events = [e for e in parsed if e is not None]
    assert [(e["step"], e["event"]) for e in events] == [
        ("train", "started"), ("train", "finished"), ("featurize", "started"),
        ("featurize", "error"), ("evaluate", "started"),
    ]
    assert events[1]["seconds"] >= 0
    assert events[3]["error"] == "DataError"
    assert events[3]["message"] == "file x.parquet: no rows"
    assert parse_event("working") is None
    assert parse_event(f"{EVENT_PREFIX} not json") is None


def test_step_settings_apply_the_pipeline_parameters(tmp_path, monkeypatch):
    config = tmp_path / "vigil.yaml"
    config.write_text("home: /elsewhere\nregistry:\n  model_name: fraud\n"
                      "features:\n  project: from_file\n")
    for var in ("VIGIL_HOME", "MLFLOW_TRACKING_URI", "VIGIL_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    settings = step_settings(str(tmp_path / "home"), str(config), "fraud_b")
    assert settings.home == tmp_path / "home"
    assert settings.registry.model_name == "fraud_b"
    assert settings.features.project == "from_file"
    assert settings.tracking_uri == f"sqlite:///{(tmp_path / 'home' / 'mlflow.db').resolve()}"
    assert step_settings("", str(config), "").home == Path("/elsewhere")


def test_pipeline_parameters_win_over_the_images_environment(tmp_path, monkeypatch):
    """The image sets VIGIL_HOME=/var/lib/vigil; a run's vigil_home must still be used."""
    monkeypatch.setenv("VIGIL_HOME", "/var/lib/vigil")
    monkeypatch.setenv("VIGIL_REGISTRY__MODEL_NAME", "from_env")
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    settings = step_settings(str(tmp_path / "run_home"), "", "fraud_b")
    assert settings.home == tmp_path / "run_home"
    assert settings.registry.model_name == "fraud_b"
    assert step_settings("", "", "").home == Path("/var/lib/vigil")
    with pytest.raises(ConfigError, match=r"pipeline parameters: registry\.model_name"):
        step_settings("", "", "no spaces allowed")


# ----------------------------------------------------------------------------- validate


def test_validate_writes_reports_and_passes_good_data(tiny_daily_dir, tmp_path):
    outcome = validate_data(tiny_daily_dir, html_report=tmp_path / "v.html",
                            json_report=tmp_path / "v.json")
    assert outcome.summary.transactions.rows > 1000
    assert outcome.summary.files == 10
    assert outcome.summary.transactions.first_day == date(2018, 4, 1)
    assert json.loads((tmp_path / "v.json").read_text())["success"] is True
    assert "<html" in (tmp_path / "v.html").read_text()


def test_validate_raises_after_writing_the_reports(tiny_transactions, tmp_path):
    tiny_transactions.loc[[3, 7], c.TX_AMOUNT] = [-1.0, -2.5]
    path = tmp_path / "bad.parquet"
    tiny_transactions.to_parquet(path, index=False)
    with pytest.raises(ValidationFailed, match="TX_AMOUNT ≥ 0") as failed:
        validate_data(path, html_report=tmp_path / "r" / "v.html",
                      json_report=tmp_path / "r" / "v.json")
    assert "report:" in str(failed.value)
    report = json.loads((tmp_path / "r" / "v.json").read_text())
    assert report["success"] is False
    assert report["failed"] == ["TX_AMOUNT ≥ 0"]
    assert (tmp_path / "r" / "v.html").is_file()


def test_validation_bounds_are_checked():
    assert validation_config(0.001, 0.1).max_fraud_share == 0.1
    with pytest.raises(ConfigError, match="fraud share bounds"):
        validation_config(0.5, 0.1)


# ----------------------------------------------------------------------------- featurize


@pytest.fixture(scope="module")
def small_daily_dir(tmp_path_factory, small_simulation: Simulation) -> Path:
    out = tmp_path_factory.mktemp("small_daily")
    cfg = small_simulation.config
    write_daily(small_simulation.transactions, out, cfg.start_date, cfg.n_days)
    return out


@pytest.fixture(scope="module")
def featurized(tmp_path_factory, small_daily_dir) -> tuple[Settings, Path, Featurization]:
    home = tmp_path_factory.mktemp("featurize_home")
    settings = _settings(home)
    dataset = home / "out" / "dataset.parquet"
    summary = featurize_data(small_daily_dir, settings=settings, windows=SPEC, dataset=dataset)
    return settings, dataset, summary


def test_featurize_serves_the_training_set_through_feast(featurized, small_simulation):
    settings, dataset, summary = featurized
    frame = pd.read_parquet(dataset)
    tx = small_simulation.transactions
    w = summary.windows
    assert (w.test_end, w.test_start) == (date(2018, 5, 30), date(2018, 5, 24))
    assert summary.transactions.rows == len(tx)
    assert summary.transactions.frauds == int(tx[c.TX_FRAUD].sum())
    assert summary.feature_service == FEATURE_SERVICE

    # Every row of the windows is there once, in its split, and nothing else.
    split = w.split_of(tx[c.TX_DATETIME])
    in_windows = tx.loc[split != ""]
    assert sorted(frame[c.TRANSACTION_ID]) == sorted(in_windows[c.TRANSACTION_ID].astype(str))
    expected_split = dict(zip(tx[c.TRANSACTION_ID].astype(str), split, strict=True))
    assert (frame[SPLIT_COLUMN] == frame[c.TRANSACTION_ID].map(expected_split)).all()
    assert summary.split_rows == frame[SPLIT_COLUMN].value_counts().to_dict()
    assert list(frame.columns) == [*DATASET_KEYS, *FEATURES, c.TX_FRAUD, SPLIT_COLUMN]

    # The point-in-time features are the one definition's batch values; delay rows have none.
    with_features = frame.loc[frame[SPLIT_COLUMN] != DELAY].set_index(c.TRANSACTION_ID)
    batch = batch_features(tx, DEFAULT_SPEC)
    batch = batch.assign(**{c.TRANSACTION_ID: batch[c.TRANSACTION_ID].astype(str)})
    batch = batch.set_index(c.TRANSACTION_ID).loc[with_features.index]
    np.testing.assert_allclose(
        with_features[FEATURES].to_numpy(np.float64), batch[FEATURES].to_numpy(np.float64),
        rtol=1e-9, atol=1e-9,
    )
    assert frame.loc[frame[SPLIT_COLUMN] == DELAY, FEATURES].isna().all().all()
    assert not with_features[FEATURES].isna().any().any()

    # The offline store holds every transaction's features, not only the windows'.
    offline = pd.read_parquet(settings.home.resolve() / "feature_repo" / "data"
                              / "transaction_features.parquet")
    assert len(offline) == len(tx)


def test_featurize_refuses_windows_the_data_cannot_fill(small_daily_dir, tmp_path):
    with pytest.raises(DataError, match="windows need"):
        featurize_data(small_daily_dir, settings=_settings(tmp_path),
                       windows=WindowSpec(train_days=50), dataset=tmp_path / "d.parquet")
    assert not (tmp_path / "d.parquet").exists()


# ----------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def trained(featurized, tmp_path_factory) -> tuple[Path, TrainingResult]:
    _, dataset, _ = featurized
    model_dir = tmp_path_factory.mktemp("model")
    return model_dir, train_model(dataset, model_dir, params={"num_threads": 1})


def test_train_writes_the_best_iteration_and_a_threshold_from_validation(featurized, trained):
    _, dataset, _ = featurized
    model_dir, result = trained
    text = (model_dir / MODEL_FILE).read_text()
    assert text.startswith("tree\n")
    booster = lgb.Booster(model_str=text)
    assert booster.num_trees() == result.best_iteration
    assert booster.feature_name() == FEATURES == result.feature_names
    assert TrainingResult.read(model_dir) == result
    assert json.loads((model_dir / TRAINING_FILE).read_text())["threshold"] == result.threshold

    # The threshold is the best F1 on the validation slice (never the test window).
    frame = pd.read_parquet(dataset)
    valid = frame.loc[frame[SPLIT_COLUMN] == VALID]
    scores = booster.predict(valid[FEATURES].to_numpy(np.float64))
    alerts = scores >= result.threshold
    y = valid[c.TX_FRAUD].to_numpy() == 1
    precision = (alerts & y).sum() / alerts.sum()
    recall = (alerts & y).sum() / y.sum()
    assert result.threshold_choice["f1"] == pytest.approx(
        2 * precision * recall / (precision + recall)
    )
    assert 0 < result.threshold < 1
    assert result.fit_rows == int((frame[SPLIT_COLUMN] == FIT).sum())
    assert result.params["num_threads"] == 1
    assert set(result.feature_importance) == set(FEATURES)


def test_lightgbm_params_are_a_json_object():
    assert parse_params('{"num_leaves": 15}') == {"num_leaves": 15}
    assert parse_params("") == {}
    with pytest.raises(ConfigError, match="not JSON"):
        parse_params("{num_leaves: 15}")
    with pytest.raises(ConfigError, match="JSON object"):
        parse_params("[1, 2]")


# ----------------------------------------------------------------------------- evaluate


@pytest.fixture
def registry_settings(tmp_path) -> Settings:
    return _settings(tmp_path / "home")


def _evaluate(featurized, trained, settings: Settings, out: Path, **kw) -> Evaluation:
    _, dataset, summary = featurized
    model_dir, _ = trained
    return evaluate_model(dataset, model_dir, out / "report", data=summary, settings=settings,
                          html_copy=out / "report.html", **kw)


def test_evaluate_without_champion(featurized, trained, registry_settings, tmp_path):
    _, dataset, _ = featurized
    model_dir, training = trained
    result = _evaluate(featurized, trained, registry_settings, tmp_path, quality_floor=0.1)
    assert result.decision == CHAMPION
    assert result.champion is None
    assert result.reason.startswith("no champion yet and average_precision")

    # The metrics are the handbook protocol's, recomputed here from the dataset.
    frame = pd.read_parquet(dataset)
    history = frame.loc[frame[SPLIT_COLUMN] != TEST]
    test = drop_known_compromised(frame.loc[frame[SPLIT_COLUMN] == TEST], history, 7)
    booster = lgb.Booster(model_file=str(model_dir / MODEL_FILE))
    expected = evaluate(test.assign(score=booster.predict(test[FEATURES].to_numpy(np.float64))))
    assert result.metrics["average_precision"] == pytest.approx(expected.average_precision)
    assert result.metrics["auc_roc"] == pytest.approx(expected.auc_roc)
    assert result.metrics["card_precision_at_100"] == pytest.approx(expected.card_precision_at_k)
    # And over every transaction of the test window (the population live traffic is).
    test_all = frame.loc[frame[SPLIT_COLUMN] == TEST]
    whole = evaluate(test_all.assign(
        score=booster.predict(test_all[FEATURES].to_numpy(np.float64)))).to_dict()
    for key in METRICS:
        assert result.metrics[ALL_TRANSACTIONS + key] == pytest.approx(whole[key])
        assert ui_metrics(result)[ALL_TRANSACTIONS + key] == result.metrics[ALL_TRANSACTIONS + key]
    assert result.test_rows == len(test)
    assert result.dropped_known_compromised == int((frame[SPLIT_COLUMN] == TEST).sum()) - len(test)
    assert result.threshold == training.threshold

    report = tmp_path / "report"
    for name in (ROC_PNG, PR_PNG, IMPORTANCE_PNG, "score_distribution.png", METRICS_JSON,
                 REPORT_HTML):
        assert (report / name).is_file(), name
    assert (tmp_path / "report.html").read_text() == (report / REPORT_HTML).read_text()
    metrics_json = json.loads((report / METRICS_JSON).read_text())
    assert metrics_json["decision"] == CHAMPION
    assert metrics_json["average_precision"] == result.metrics["average_precision"]
    assert ui_metrics(result)["registered"] == 1.0
    assert Evaluation.from_json(to_json(result)) == result

    rejected = _evaluate(featurized, trained, registry_settings, tmp_path / "again",
                         quality_floor=0.999)
    assert rejected.decision == "rejected"
    assert "below the quality floor 0.9990" in rejected.reason
    refusal = explain_refusal(rejected, "fraud")
    assert refusal == Registration(False, "fraud", None, None, rejected.reason)
    with pytest.raises(ConfigError):
        explain_refusal(result, "fraud")


def _champion_from(booster_text: str, settings: Settings, summary: Featurization) -> int:
    card = Registry.from_settings(settings).register_model(
        booster_text, name=settings.registry.model_name, threshold=0.5,
        feature_service=FEATURE_SERVICE,
        data_range=(summary.windows.train_start, summary.windows.train_end),
        metrics={"average_precision": 0.0}, alias=CHAMPION,
    )
    return card.version


def test_the_champion_is_scored_on_the_same_rows(featurized, trained, registry_settings, tmp_path):
    _, _, summary = featurized
    model_dir, _ = trained
    version = _champion_from((model_dir / MODEL_FILE).read_text(), registry_settings, summary)
    result = _evaluate(featurized, trained, registry_settings, tmp_path, quality_floor=0.0)
    # The same model on the same rows: identical metrics, hence a tie, hence no registration.
    assert result.champion is not None
    assert result.champion.version == version
    assert result.champion.metrics == {k: v for k, v in result.metrics.items()
                                       if not k.startswith(ALL_TRANSACTIONS)}
    assert result.decision == "rejected"
    assert f"is not better than champion version {version}" in result.reason


def test_a_better_candidate_becomes_challenger_and_is_registered(
    featurized, trained, registry_settings, tmp_path
):
    settings = registry_settings
    _, dataset, summary = featurized
    model_dir, training = trained
    # A weak champion: one stump on the amount only.
    frame = pd.read_parquet(dataset)
    fit = frame.loc[frame[SPLIT_COLUMN] == FIT]
    x = fit[FEATURES].to_numpy(np.float64).copy()
    x[:, 1:] = 0.0
    weak = lgb.train({"objective": "binary", "num_leaves": 2, "verbose": -1, "num_threads": 1},
                     lgb.Dataset(x, fit[c.TX_FRAUD].to_numpy(), feature_name=FEATURES),
                     num_boost_round=1)
    version = _champion_from(weak.model_to_string(), settings, summary)

    result = _evaluate(featurized, trained, settings, tmp_path, quality_floor=0.0)
    assert result.decision == CHALLENGER, result.reason
    assert result.champion is not None and result.champion.version == version
    assert result.metrics["average_precision"] > result.champion.metrics["average_precision"]

    registration = register_candidate(model_dir, tmp_path / "report", result, settings=settings,
                                      alias=result.decision)
    assert registration == Registration(True, "fraud", version + 1, CHALLENGER, result.reason)
    registry = Registry.from_settings(settings)
    assert registry.get_card("fraud", alias=CHAMPION).version == version  # unchanged
    card = registry.get_card("fraud", alias=CHALLENGER)
    assert card.version == version + 1
    assert card.threshold == training.threshold
    assert card.feature_service == FEATURE_SERVICE
    assert card.feature_names == tuple(FEATURES)
    assert (card.train_start, card.train_end) == (summary.windows.train_start,
                                                  summary.windows.train_end)
    assert card.metrics["average_precision"] == result.metrics["average_precision"]

    # Round trip: the registered bytes are the evaluated model's.
    loaded = registry.load_model("fraud", alias=CHALLENGER)
    assert loaded.booster.model_to_string() == lgb.Booster(
        model_file=str(model_dir / MODEL_FILE)).model_to_string()
    reports = {Path(f.path).name for f in MlflowClient(registry.tracking_uri).list_artifacts(
        card.run_id, "reports")}
    assert {ROC_PNG, PR_PNG, IMPORTANCE_PNG, METRICS_JSON, REPORT_HTML, TRAINING_FILE} <= reports


def test_a_champion_decision_turns_challenger_when_a_champion_appeared(
    featurized, trained, registry_settings, tmp_path
):
    model_dir, _ = trained
    result = _evaluate(featurized, trained, registry_settings, tmp_path, quality_floor=0.0)
    assert result.decision == CHAMPION
    first = register_candidate(model_dir, tmp_path / "report", result,
                               settings=registry_settings, alias=CHAMPION)
    assert (first.version, first.alias) == (1, CHAMPION)
    second = register_candidate(model_dir, tmp_path / "report", result,
                                settings=registry_settings, alias=CHAMPION)
    assert (second.version, second.alias) == (2, CHALLENGER)
    assert "a champion appeared" in second.reason
    with pytest.raises(ConfigError, match="alias must be"):
        register_candidate(model_dir, tmp_path / "report", result, settings=registry_settings,
                           alias="production")


def test_a_tampered_champion_stops_the_evaluation(featurized, trained, registry_settings,
                                                  tmp_path):
    _, _, summary = featurized
    model_dir, _ = trained
    _champion_from((model_dir / MODEL_FILE).read_text(), registry_settings, summary)
    card = Registry.from_settings(registry_settings).get_card("fraud", alias=CHAMPION)
    stored = Path(urllib.parse.unquote(urllib.parse.urlparse(card.source).path)) / MODEL_FILE
    stored.write_text(stored.read_text().replace("tree\n", "tree\n\n", 1))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        _evaluate(featurized, trained, registry_settings, tmp_path, quality_floor=0.0)


def test_live_performance_of_the_test_window_is_the_registered_reference(
    featurized, trained, registry_settings, tmp_path
):
    """Like for like: the registered version serves its own test window (undrifted traffic,
    every transaction, as production sees it) and every label arrives; the live job measures
    exactly its registered reference, not the handbook figure (cards known to be compromised
    left out, another population)."""
    from drift_support import write_log

    from monitoring.performance import run_job

    _, dataset, _ = featurized
    model_dir, _ = trained
    result = _evaluate(featurized, trained, registry_settings, tmp_path, quality_floor=0.0)
    registration = register_candidate(model_dir, tmp_path / "report", result,
                                      settings=registry_settings, alias=result.decision)
    registry = Registry.from_settings(registry_settings)
    card = registry.get_card("fraud", version=registration.version)
    frame = pd.read_parquet(dataset)
    test = frame.loc[frame[SPLIT_COLUMN] == TEST]
    scores = registry.load_model("fraud", version=card.version).booster.predict(
        test[FEATURES].to_numpy(np.float64))
    served = test.assign(score=scores, decision=np.where(scores >= card.threshold, c.FRAUD_DECISION,
                                                        c.LEGIT_DECISION))
    write_log(served, tmp_path / "log", "fraud", card.version)
    labels = tmp_path / "labels.parquet"
    test[[c.TRANSACTION_ID, c.TX_FRAUD]].astype({c.TRANSACTION_ID: str}).to_parquet(labels)

    run = run_job(model_name="fraud", log_root=str(tmp_path / "log"), labels=str(labels),
                  registry=registry, versions=None, alert_cost=5.0, min_labelled=100,
                  out_root=tmp_path / "performance", pushgateway_url=None)
    (live,) = run.results
    assert (live.transactions, live.frauds) == (len(test), int(test[c.TX_FRAUD].sum()))
    for key in METRICS:
        assert getattr(live, key) == pytest.approx(live.evaluated[key], abs=1e-9), key
        assert live.evaluated[key] == card.metrics[ALL_TRANSACTIONS + key]
        assert live.evaluated_handbook[key] == card.metrics[key]
    # The handbook figure measures another population: far from what live traffic reads.
    gap = live.average_precision - live.evaluated_handbook["average_precision"]
    assert abs(gap) > 0.02, gap


def test_current_champion(registry_settings, featurized, trained):
    registry = Registry.from_settings(registry_settings)
    assert current_champion(registry, "fraud") is None  # never registered
    model_dir, _ = trained
    registry.register_model((model_dir / MODEL_FILE), name="fraud", threshold=0.5,
                            feature_service=FEATURE_SERVICE, data_range=(date(2018, 5, 1),) * 2,
                            metrics={})
    assert current_champion(registry, "fraud") is None  # registered, no alias
    registry.promote("fraud", 1)
    champion = current_champion(registry, "fraud")
    assert champion is not None and champion.card.version == 1
    with pytest.raises(RegistryError):
        current_champion(registry, "not a valid name!")


def test_results_round_trip_and_reject_bad_json(featurized):
    _, _, summary = featurized
    assert Featurization.from_json(to_json(summary)) == summary
    reg = Registration(True, "fraud", 3, CHALLENGER, "better")
    assert Registration.from_json(to_json(reg)) == reg
    with pytest.raises(VigilError, match="not JSON"):
        Registration.from_json("{")
    with pytest.raises(VigilError, match="JSON object"):
        Registration.from_json("[]")

