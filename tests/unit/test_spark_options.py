"""The Spark engine's options and errors, without starting a JVM (the engine itself:
tests/integration/test_spark_features.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from feature_store.engines import DEFAULT_ENGINE, ENGINES, SparkOptions
from feature_store.jobs import engine_features
from vigil.errors import FeatureStoreError

pytestmark = pytest.mark.unit


def test_duckdb_stays_the_default_engine() -> None:
    assert DEFAULT_ENGINE == "duckdb" and ENGINES == ("duckdb", "spark")


def test_a_local_session_is_small_quiet_and_bound_to_loopback() -> None:
    conf = SparkOptions().conf()
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.driver.memory"] == "1g"
    assert conf["spark.sql.shuffle.partitions"] == "2"
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.sql.session.timeZone"] == "UTC"


def test_a_cluster_driver_is_not_bound_to_loopback() -> None:
    conf = SparkOptions(master="spark://10.0.0.5:7077", partitions=64).conf()
    assert "spark.driver.host" not in conf and "spark.driver.bindAddress" not in conf
    assert conf["spark.sql.shuffle.partitions"] == "64"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"master": " "}, "spark master: empty"), ({"partitions": 0}, "spark partitions: 0")],
)
def test_bad_options_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FeatureStoreError, match=message):
        SparkOptions(**kwargs)  # type: ignore[arg-type]


def test_an_unknown_engine_is_named() -> None:
    with pytest.raises(FeatureStoreError, match="feature engine 'flink': expected one of duckdb"):
        engine_features(pd.DataFrame(), "flink")


def test_no_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from feature_store.spark import spark_session

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    session = spark_session()
    with pytest.raises(FeatureStoreError, match="needs a Java 17\\+ runtime: no `java` on PATH"):
        session.__enter__()
