"""The MLflow-backed model registry on a temporary SQLite tracking URI, and ``vigil models``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import urllib.parse
from datetime import date
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from vigil.errors import ModelIntegrityError, RegistryError
from vigil.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_FEATURE_NAMES,
    UNKNOWN_COMMIT,
    ModelCard,
    Registry,
    default_artifact_root,
    detect_git_commit,
)
from vigil.settings import Settings, load_settings
from vigil_cli.cli import cli, main

pytestmark = pytest.mark.unit

FEATURES = ["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT", "CUSTOMER_ID_NB_TX_1DAY_WINDOW"]
RANGE = (date(2018, 7, 25), date(2018, 7, 31))


def train(seed: int) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, len(FEATURES)))
    y = (x[:, 0] - 0.5 * x[:, 2] + 0.5 * rng.normal(size=len(x)) > 0).astype(int)
    params = {"objective": "binary", "num_threads": 1, "verbose": -1, "num_leaves": 7,
              "seed": seed, "deterministic": True}
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=FEATURES), num_boost_round=8)
    return booster, x


@pytest.fixture(scope="module")
def boosters() -> list[tuple[lgb.Booster, np.ndarray]]:
    return [train(seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """An MLflow database with its schema, made once: creating the schema takes about a second."""
    path = tmp_path_factory.mktemp("mlflow") / "empty.db"
    Registry(f"sqlite:///{path}")  # the client creates the schema
    return path


def fresh_db(empty_db: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_db, path)
    return path


@pytest.fixture()
def registry(tmp_path: Path, empty_db: Path) -> Registry:
    fresh_db(empty_db, tmp_path / "home" / "mlflow.db")
    return Registry.from_settings(Settings(home=tmp_path / "home"))


def register(registry: Registry, booster: lgb.Booster | Path | str, *, alias=None, threshold=0.5,
             metrics=None, name="fraud", **kw) -> ModelCard:
    return registry.register_model(
        booster, name=name, threshold=threshold, feature_service="fraud_v1", data_range=RANGE,
        metrics=metrics if metrics is not None else {"auc_roc": 0.87, "average_precision": 0.6},
        params={"num_leaves": 7, "num_boost_round": 8}, alias=alias, **kw,
    )


def artifact_file(card: ModelCard, file: str = "model.txt") -> Path:
    parsed = urllib.parse.urlparse(card.source)
    assert parsed.scheme == "file", card.source
    return Path(urllib.parse.unquote(parsed.path)) / file


def test_round_trip_is_lossless_and_records_the_card(registry, boosters, tmp_path):
    booster, x = boosters[0]
    report = tmp_path / "evaluation.json"
    report.write_text('{"auc_roc": 0.87}')
    card = register(registry, booster, alias=CHAMPION, threshold=0.31, artifacts=[report],
                    git_commit="a" * 40)

    text = booster.model_to_string()
    assert card.version == 1
    assert card.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert card.threshold == 0.31
    assert card.feature_service == "fraud_v1"
    assert card.feature_names == tuple(FEATURES)
    assert (card.train_start, card.train_end) == RANGE
    assert card.metrics == {"auc_roc": 0.87, "average_precision": 0.6}
    assert card.git_commit == "a" * 40
    assert card.aliases == (CHAMPION,)

    loaded = registry.load_model("fraud")  # the champion by default
    assert loaded.card == card
    assert np.array_equal(loaded.booster.predict(x), booster.predict(x))
    assert loaded.booster.feature_name() == FEATURES

    # The stored artifact is LightGBM's text format, with a JSON card beside it.
    stored = artifact_file(card)
    assert stored.read_text() == text
    assert stored.read_bytes().startswith(b"tree\n")
    meta = json.loads(artifact_file(card, "model.json").read_text())
    assert meta["sha256"] == card.sha256
    assert meta["threshold"] == 0.31
    assert meta["feature_names"] == FEATURES
    assert meta["format"] == "lightgbm-text"
    assert not list(stored.parent.glob("*.pkl"))

    # The run holds params, metrics, the card as tags and the reports.
    client = MlflowClient(registry.tracking_uri)
    run = client.get_run(card.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"num_leaves": "7", "num_boost_round": "8"}
    assert run.data.metrics == {"auc_roc": 0.87, "average_precision": 0.6}
    assert run.data.tags["vigil.threshold"] == "0.31"
    assert run.data.tags["vigil.feature_service"] == "fraud_v1"
    assert run.data.tags["vigil.train_start"] == "2018-07-25"
    assert run.data.tags["vigil.train_end"] == "2018-07-31"
    assert run.data.tags["mlflow.source.git.commit"] == "a" * 40
    assert run.data.tags["vigil.sha256"] == card.sha256
    assert [f.path for f in client.list_artifacts(card.run_id, "reports")] == [
        "reports/evaluation.json"
    ]
    # Artifacts live under the Vigil home for a local tracking database.
    assert stored.is_relative_to((tmp_path / "home" / "mlartifacts").resolve())


def test_file_and_text_inputs_register_the_same_bytes(registry, boosters, tmp_path):
    booster, x = boosters[0]
    path = tmp_path / "model.txt"
    booster.save_model(str(path))
    from_file = register(registry, path)
    from_text = register(registry, path.read_text())
    assert from_file.sha256 == from_text.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (from_file.version, from_text.version) == (1, 2)
    loaded = registry.load_model("fraud", version=2)
    assert np.array_equal(loaded.booster.predict(x), booster.predict(x))


def test_more_params_than_one_mlflow_batch_are_all_recorded(registry, boosters):
    params = {f"p{i:03d}": i for i in range(250)}
    card = registry.register_model(boosters[0][0], name="fraud", threshold=0.5,
                                   feature_service="fraud_v1", data_range=RANGE, metrics={},
                                   params=params)
    run = MlflowClient(registry.tracking_uri).get_run(card.run_id)
    assert run.data.params == {k: str(v) for k, v in params.items()}
    assert card.metrics == {}


def test_invalid_registrations_are_refused(registry, boosters):
    booster, _ = boosters[0]
    with pytest.raises(ValueError, match="feature_names"):
        register(registry, booster, feature_names=list(reversed(FEATURES)))
    with pytest.raises(ValueError, match="threshold"):
        register(registry, booster, threshold=1.5)
    with pytest.raises(ValueError, match="text model format"):
        register(registry, "not a model")
    with pytest.raises(ValueError, match="starts after it ends"):
        registry.register_model(booster, name="fraud", threshold=0.5, feature_service="fraud_v1",
                                data_range=(RANGE[1], RANGE[0]), metrics={})
    with pytest.raises(RegistryError, match="invalid model name"):
        register(registry, booster, name="fraud/v1")
    with pytest.raises(RegistryError, match="cannot record a run"):
        register(registry, booster, metrics={"cp@100": 0.3})  # not a valid MLflow metric name
    with pytest.raises(RegistryError, match="no registered model named 'fraud'"):
        registry.list_models("fraud")  # nothing was registered by the refused calls


def test_champion_and_challenger_aliases(registry, boosters):
    v1 = register(registry, boosters[0][0], alias=CHAMPION)
    v2 = register(registry, boosters[1][0], alias=CHALLENGER, threshold=0.4)
    v3 = register(registry, boosters[2][0])
    assert (v1.aliases, v2.aliases, v3.aliases) == ((CHAMPION,), (CHALLENGER,), ())
    assert registry.get_alias("fraud", CHAMPION).version == 1
    assert registry.get_alias("fraud", CHALLENGER).version == 2
    assert registry.load_model("fraud", alias=CHALLENGER).card.threshold == 0.4
    listed = registry.list_models("fraud")
    assert [(c.version, c.aliases) for c in listed] == [(3, ()), (2, (CHALLENGER,)),
                                                       (1, (CHAMPION,))]
    assert registry.set_challenger("fraud", 3).aliases == (CHALLENGER,)
    assert registry.get_card("fraud", version=2).aliases == ()


def test_promote_then_rollback_restores_the_previous_champion(registry, boosters):
    register(registry, boosters[0][0], alias=CHAMPION)
    register(registry, boosters[1][0], alias=CHALLENGER)
    promoted = registry.promote("fraud", 2)
    assert promoted.version == 2
    assert promoted.aliases == (CHAMPION,)  # no longer the challenger
    assert registry.champion_history("fraud") == [1]
    _, x = boosters[1]
    assert np.array_equal(registry.load_model("fraud").booster.predict(x),
                          boosters[1][0].predict(x))

    back = registry.rollback("fraud")
    assert back.version == 1
    assert back.aliases == (CHAMPION,)
    assert registry.get_card("fraud", version=2).aliases == ()
    assert registry.champion_history("fraud") == []
    with pytest.raises(RegistryError, match=r"no previous champion .*champion: version 1"):
        registry.rollback("fraud")


def test_rollback_walks_back_through_several_promotions(registry, boosters):
    for booster, _ in boosters:
        register(registry, booster, alias=CHAMPION)
    assert registry.champion_history("fraud") == [1, 2]
    assert registry.promote("fraud", 3).version == 3  # already champion: no-op
    assert registry.champion_history("fraud") == [1, 2]
    assert registry.rollback("fraud").version == 2
    assert registry.rollback("fraud").version == 1
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback("fraud")


def test_rollback_without_history_is_a_clear_error(registry, boosters):
    register(registry, boosters[0][0])
    with pytest.raises(RegistryError, match=r"no previous champion .*champion: none"):
        registry.rollback("fraud")
    register(registry, boosters[1][0], alias=CHAMPION)
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback("fraud")


def test_rollback_to_a_deleted_version_is_refused(registry, boosters):
    register(registry, boosters[0][0], alias=CHAMPION)
    register(registry, boosters[1][0], alias=CHAMPION)
    MlflowClient(registry.tracking_uri).delete_model_version("fraud", "1")
    with pytest.raises(RegistryError, match="version 1, no longer exists"):
        registry.rollback("fraud")
    assert registry.get_alias("fraud", CHAMPION).version == 2


def test_tampered_model_is_refused_at_load(registry, boosters):
    good = register(registry, boosters[0][0])
    card = register(registry, boosters[1][0], alias=CHAMPION)
    stored = artifact_file(card)
    # Change one digit of the first leaf value: still a valid LightGBM model of the same size
    # (its header lists tree sizes in bytes), but not the registered one.
    text = stored.read_text()
    start = text.index("leaf_value=") + len("leaf_value=")
    end = text.index(" ", start)
    digit = text[end - 1]
    stored.write_text(text[:end - 1] + ("1" if digit != "1" else "2") + text[end:])
    actual = hashlib.sha256(stored.read_bytes()).hexdigest()
    _, x = boosters[1]
    tampered = lgb.Booster(model_str=stored.read_text())
    assert not np.array_equal(tampered.predict(x), boosters[1][0].predict(x))

    with pytest.raises(ModelIntegrityError) as info:
        registry.load_model("fraud")
    message = str(info.value)
    assert "fraud version 2" in message
    assert card.sha256 in message
    assert actual in message
    assert isinstance(info.value, RegistryError)
    # Other versions still load.
    assert registry.load_model("fraud", version=good.version).card.sha256 == good.sha256


def test_feature_names_that_disagree_with_the_card_are_refused(registry, boosters):
    card = register(registry, boosters[0][0], alias=CHAMPION)
    MlflowClient(registry.tracking_uri).set_model_version_tag(
        "fraud", str(card.version), TAG_FEATURE_NAMES, json.dumps(FEATURES[::-1])
    )
    with pytest.raises(ModelIntegrityError, match="booster features"):
        registry.load_model("fraud")


def test_unknown_models_versions_and_aliases(registry, boosters):
    with pytest.raises(RegistryError, match="no registered model named 'fraud'"):
        registry.load_model("fraud")
    register(registry, boosters[0][0])
    with pytest.raises(RegistryError, match=r"no alias 'champion' \(aliases: none\)"):
        registry.load_model("fraud")
    registry.promote("fraud", 1)
    with pytest.raises(RegistryError,
                       match=r"no alias 'challenger' \(aliases: champion -> version 1\)"):
        registry.get_alias("fraud", CHALLENGER)
    with pytest.raises(RegistryError, match="has no version 7"):
        registry.load_model("fraud", version=7)
    with pytest.raises(RegistryError, match="has no version 7"):
        registry.promote("fraud", 7)
    with pytest.raises(RegistryError, match="positive integer, got 'abc'"):
        registry.get_card("fraud", version="abc")
    with pytest.raises(RegistryError, match="no registered model named 'other'"):
        registry.promote("other", 1)
    with pytest.raises(ValueError, match="not both"):
        registry.load_model("fraud", version=1, alias=CHAMPION)


def test_tracking_uri_and_artifact_root(tmp_path):
    db = tmp_path / "deep" / "er" / "mlflow.db"
    registry = Registry(f"sqlite:///{db}")
    assert db.parent.is_dir()
    assert registry.artifact_root is None
    home = tmp_path / "home"
    settings = load_settings(env={"VIGIL_HOME": str(home)})
    expected = f"sqlite:///{(home / 'mlflow.db').resolve()}"
    assert Registry.from_settings(settings).tracking_uri == expected
    assert default_artifact_root("sqlite:///x.db", home) == (home / "mlartifacts").resolve()
    assert default_artifact_root("postgresql://u@h/db", home) == (home / "mlartifacts").resolve()
    assert default_artifact_root("http://mlflow:5000", home) is None
    assert default_artifact_root("https://mlflow.example", home) is None


def test_git_commit_detection(tmp_path):
    assert detect_git_commit(tmp_path) == UNKNOWN_COMMIT  # not a checkout
    repo = Path(__file__).resolve().parents[2]
    if (repo / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", detect_git_commit(repo))


# ---------------------------------------------------------------------- CLI


@pytest.fixture()
def cli_env(tmp_path, monkeypatch, empty_db) -> dict[str, str]:
    home = tmp_path / "home"
    db = fresh_db(empty_db, tmp_path / "cli.db")
    env = {"VIGIL_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./vigil.yaml
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_cli_list_promote_rollback(cli_env, boosters):
    registry = Registry.from_settings(load_settings())
    assert registry.tracking_uri == cli_env["MLFLOW_TRACKING_URI"]
    v1 = register(registry, boosters[0][0], alias=CHAMPION,
                  metrics={"auc_roc": 0.871, "average_precision": 0.606,
                           "card_precision_at_100": 0.291})
    v2 = register(registry, boosters[1][0], alias=CHALLENGER, threshold=0.25)
    runner = CliRunner()

    result = runner.invoke(cli, ["models", "list"])  # default name from the settings: fraud
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["VERSION", "ALIASES", "SHA256", "THRESHOLD",
                                           "AUC ROC", "AP", "CP@100", "DATA", "CREATED"]
    assert lines[1].split()[:8] == ["2", "challenger", v2.sha256[:12], "0.25", "0.870", "0.600",
                                    "-", "2018-07-25..2018-07-31"]
    assert lines[2].split()[:8] == ["1", "champion", v1.sha256[:12], "0.5", "0.871", "0.606",
                                    "0.291", "2018-07-25..2018-07-31"]

    result = runner.invoke(cli, ["models", "promote", "fraud", "2"])
    assert result.exit_code == 0, result.output
    assert "fraud version 2 is the champion" in result.output
    assert registry.get_alias("fraud", CHAMPION).version == 2

    result = runner.invoke(cli, ["models", "rollback", "fraud"])
    assert result.exit_code == 0, result.output
    assert "fraud version 1 is the champion again" in result.output
    assert registry.get_alias("fraud", CHAMPION).version == 1

    result = runner.invoke(cli, ["models", "rollback", "fraud"])
    assert isinstance(result.exception, RegistryError)

    result = runner.invoke(cli, ["models", "promote", "fraud", "zero"])
    assert result.exit_code == 2
    assert "Invalid value for 'VERSION'" in result.output


def test_cli_errors_are_printed_without_traceback(cli_env, boosters, monkeypatch, capsys):
    registry = Registry.from_settings(load_settings())
    register(registry, boosters[0][0], alias=CHAMPION)
    monkeypatch.setattr(sys, "argv", ["vigil", "models", "rollback", "fraud"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: model 'fraud' has no previous champion to roll back to" in err
    assert "Traceback" not in err

    monkeypatch.setattr(sys, "argv", ["vigil", "models", "list", "nope"])
    with pytest.raises(SystemExit):
        main()
    assert "error: no registered model named 'nope'" in capsys.readouterr().err


def test_find_returns_none_until_the_alias_exists(registry, boosters):
    assert registry.find("fraud", CHAMPION) is None  # no model of that name yet
    first = register(registry, boosters[0][0])
    assert registry.find("fraud", CHAMPION) is None  # a model, but no champion
    registry.promote("fraud", first.version)
    found = registry.find("fraud", CHAMPION)
    assert found is not None and found.version == first.version
    with pytest.raises(RegistryError, match="name"):
        registry.find("", CHAMPION)
