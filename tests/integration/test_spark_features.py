"""The one feature definition on Spark (a real local PySpark session) equals the DuckDB path.

One session for the module (starting a JVM takes seconds). Parity is on simulated data with the
handbook's 7-day label delay, plus same-instant transactions of one customer whose ids only the
one rule of :mod:`vigil.ordering` orders (19-digit int64, ``1e3``, 2^63, signs, spaces): rows,
keys and every feature column, to 1e-9. Then Feast's Spark offline store serves the same
training set as its DuckDB store.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store import offline
from feature_store.config import StoreConfig
from feature_store.engines import SparkOptions
from feature_store.store import open_store
from feature_store.transforms import DEFAULT_SPEC, SPARK, batch_features, batch_sql
from vigil import contract as c
from vigil.data.simulate import SimulationConfig, simulate
from vigil.ordering import id_order_key

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
#: Ids that only the one ordering rule orders: int64 and beyond, exponent, signs, spaces, hex.
HARD_IDS = ["1234567890123456789", "1e3", "9223372036854775808", "-5", "+5", "007", "7", "abc",
            " 5", "0x10"]


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """One local Spark session for the module, stopped at the end."""
    if shutil.which("java") is None:
        pytest.fail("java (openjdk-17-jre-headless) is needed by the Spark tests: not on PATH")
    from feature_store.spark import spark_session

    with spark_session(SparkOptions(master="local[2]", partitions=2)) as session:
        yield session


def _raw(frame: pd.DataFrame) -> pd.DataFrame:
    tx = frame.copy()
    for col in c.ID_COLUMNS:
        tx[col] = tx[col].astype(str).astype("string[pyarrow]")
    return tx


def _with_ties(tx: pd.DataFrame) -> pd.DataFrame:
    """``tx`` plus, for a few customers, bursts of transactions at one instant with the hard
    ids (shuffled, amounts differing), some on fraud-labelled terminals: ties at every window
    edge the definition has."""
    rng = np.random.default_rng(8)
    frauds = tx[tx[c.TX_FRAUD] == 1]
    bursts = []
    for k, row in enumerate(frauds.sample(6, random_state=2).itertuples(index=False)):
        # the first burst has the ids as they are; the others a digit more (still awkward:
        # 20 digits are text, '1e31' too), unique, and unlike the simulation's 8-digit ids
        ids = [h if k == 0 else f"{h}{k}" for h in HARD_IDS]
        burst = pd.DataFrame({
            c.TRANSACTION_ID: list(rng.permutation(ids)),
            c.TX_DATETIME: row.TX_DATETIME,
            c.CUSTOMER_ID: row.CUSTOMER_ID,
            c.TERMINAL_ID: row.TERMINAL_ID,
            c.TX_AMOUNT: rng.uniform(1, 300, len(ids)).round(2),
            c.TX_FRAUD: rng.integers(0, 2, len(ids)),
        })
        bursts.append(burst)
    tx = tx[list(bursts[0].columns)].assign(
        **{c.TRANSACTION_ID: tx[c.TRANSACTION_ID].astype(np.int64) + 10_000_000}
    )
    out = pd.concat([tx, *bursts], ignore_index=True)
    out[c.TX_DATETIME] = out[c.TX_DATETIME].astype("datetime64[us]")
    return _raw(out.sample(frac=1.0, random_state=5).reset_index(drop=True))


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    sim = simulate(SimulationConfig(n_customers=120, n_terminals=150, n_days=50, seed=21))
    return _with_ties(sim.transactions)


def assert_same_features(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same rows in the same order, same keys, every feature to 1e-9."""
    assert len(got) == len(expected)
    assert list(got.columns) == list(expected.columns)
    for key in (*c.KEY_COLUMNS, c.TX_FRAUD):
        assert got[key].astype(str).tolist() == expected[key].astype(str).tolist(), key
    for name in DEFAULT_SPEC.features:
        np.testing.assert_allclose(
            got[name].to_numpy(np.float64), expected[name].to_numpy(np.float64),
            rtol=1e-9, atol=1e-9, err_msg=name,
        )
        assert got[name].dtype == expected[name].dtype, name


def test_the_spark_dialect_is_the_duckdb_query_but_for_epoch_microseconds() -> None:
    duck, spark = batch_sql(), batch_sql(dialect=SPARK)
    assert "epoch_us(ts)" in duck and "unix_micros(ts)" in spark
    assert spark.replace("unix_micros(ts)", "epoch_us(ts)") == duck


def test_spark_equals_duckdb_on_simulated_data_with_ties_and_label_delay(
    spark: object, transactions: pd.DataFrame
) -> None:
    from feature_store.spark import spark_features

    tx = transactions
    ties = tx.duplicated([c.CUSTOMER_ID, c.TX_DATETIME], keep=False)
    assert ties.sum() >= 6 * len(HARD_IDS)
    got = spark_features(tx, session=spark)
    expected = batch_features(tx)
    assert_same_features(got, expected)
    # the data exercises what is compared: known labels after the 7-day delay, frauds among them
    assert (expected["TERMINAL_ID_NB_TX_7DAY_WINDOW"] > 0).mean() > 0.5
    assert expected["TERMINAL_ID_RISK_30DAY_WINDOW"].max() > 0
    first = tx[c.TX_DATETIME].min()
    early = (tx[c.TX_DATETIME] < first + 7 * DAY).to_numpy()
    assert (got.loc[early, "TERMINAL_ID_NB_TX_30DAY_WINDOW"] == 0).all()  # nothing known yet


def test_same_instant_ids_count_in_the_one_order_on_spark(spark: object) -> None:
    from feature_store.spark import spark_features

    t0 = pd.Timestamp("2018-04-02 12:00:00")
    ids = list(np.random.default_rng(3).permutation(HARD_IDS))
    tx = _raw(pd.DataFrame({
        c.TRANSACTION_ID: ids,
        c.TX_DATETIME: pd.Series([t0] * len(ids)).astype("datetime64[us]"),
        c.CUSTOMER_ID: "A",
        c.TERMINAL_ID: "T",
        c.TX_AMOUNT: np.arange(1.0, len(ids) + 1),
        c.TX_FRAUD: 0,
    }))
    got = spark_features(tx, session=spark).set_index(c.TRANSACTION_ID)
    order = sorted(ids, key=id_order_key)
    assert got.loc[order, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"].tolist() == list(range(1, 11))
    assert_same_features(got.reset_index(), batch_features(tx))


def test_int64_ids_and_label_delay_edges_on_spark(spark: object) -> None:
    """Ids arriving as int64 (19 digits), and labels becoming known exactly 7 days later."""
    from feature_store.spark import spark_features

    t0 = pd.Timestamp("2018-04-02 12:00:00")
    big = 1_234_567_890_123_456_780
    micro = pd.Timedelta(microseconds=1)
    events = [
        (big + 9, t0, "A", "T", 10.0, 1),
        (big + 1, t0 + DAY, "A", "T", 20.0, 0),
        (big + 2, t0 + DAY, "A", "T", 30.0, 0),
        (big + 10, t0 + DAY, "A", "U", 5.0, 0),
        (big + 11, t0 + DAY, "D", "T", 1.0, 1),
        (big + 4, t0 + 7 * DAY, "B", "T", 40.0, 0),  # the first label is known exactly now
        (big + 5, t0 + 7 * DAY - micro, "B", "T", 50.0, 0),  # 1 us too early
        (big + 6, t0 + 8 * DAY, "B", "T", 60.0, 1),
        (big + 7, t0 + 38 * DAY, "A", "T", 0.0, 0),
    ]
    tx = pd.DataFrame(events, columns=[c.TRANSACTION_ID, c.TX_DATETIME, c.CUSTOMER_ID,
                                       c.TERMINAL_ID, c.TX_AMOUNT, c.TX_FRAUD])
    tx[c.TX_DATETIME] = tx[c.TX_DATETIME].astype("datetime64[us]")
    assert tx[c.TRANSACTION_ID].dtype == np.int64
    got = spark_features(tx, session=spark)
    assert_same_features(got, batch_features(tx))
    by_id = got.set_index(c.TRANSACTION_ID)
    assert by_id.at[big + 4, "TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 1
    assert by_id.at[big + 5, "TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 0
    assert by_id.at[big + 2, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2  # after its tied peer


def test_feast_spark_offline_store_serves_the_duckdb_training_set(
    spark: object, transactions: pd.DataFrame, tmp_path: Path
) -> None:
    """Feast 0.67's Spark offline store (SparkSource over the same parquet sources) returns the
    training set of its DuckDB store, point in time, ties included."""
    from feast import FeatureStore

    from feature_store.spark import spark_definitions, spark_repo_config

    config = StoreConfig(repo_path=tmp_path / "repo", project="vigil_spark", redis_url="redis://")
    tx = transactions
    offline.write_sources(config.data_dir, tx, batch_features(tx))
    rows = tx[tx[c.TX_DATETIME] >= tx[c.TX_DATETIME].min() + 20 * DAY].reset_index(drop=True)
    expected = offline.training_set(open_store(config, online="sqlite"), rows)

    store = FeatureStore(config=spark_repo_config(config))
    store.apply(list(spark_definitions(str(config.data_dir)).all))
    got = offline.training_set(store, rows)
    assert_same_features(got, expected)


def test_the_featurize_job_on_spark_writes_what_duckdb_writes(
    spark: object, transactions: pd.DataFrame, tmp_path: Path
) -> None:
    """``featurize(engine="spark")`` (the command's and the pipeline step's job) uses this
    process's session and writes the same features and offline sources as DuckDB."""
    from feature_store.jobs import featurize

    written = {}
    for engine in ("duckdb", "spark"):
        config = StoreConfig(repo_path=tmp_path / engine, project="p", redis_url="redis://")
        _, result = featurize(transactions, tmp_path / engine / "out", store=config,
                              engine=engine)
        assert result.rows == len(transactions)
        assert result.store_sources is not None
        written[engine] = (
            pd.read_parquet(result.path),
            pd.read_parquet(result.store_sources.transaction_features).drop(columns="created"),
        )
    assert_same_features(written["spark"][0], written["duckdb"][0])
    spark_rows, duckdb_rows = written["spark"][1], written["duckdb"][1]
    assert list(spark_rows.columns) == list(duckdb_rows.columns)
    for name in spark_rows.columns:
        if name in DEFAULT_SPEC.features:
            np.testing.assert_allclose(spark_rows[name], duckdb_rows[name], rtol=1e-9, atol=1e-9)
        else:
            assert spark_rows[name].tolist() == duckdb_rows[name].tolist(), name
    assert spark.sparkContext._jsc is not None  # type: ignore[attr-defined]  # still running


def test_vigil_featurize_engine_spark_end_to_end(tiny_daily_dir: Path, tmp_path: Path) -> None:
    """The command in a fresh process: it starts its own local Spark, writes the features
    DuckDB computes, and stops Spark (the process exits)."""
    import subprocess
    import sys

    from vigil.data.ingest import read_transactions

    done = subprocess.run(
        [sys.executable, "-m", "vigil_cli", "featurize", "--transactions", str(tiny_daily_dir),
         "--out", str(tmp_path / "out"), "--no-store", "--engine", "spark",
         "--master", "local[2]", "--partitions", "3"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on spark" in done.stdout
    got = pd.read_parquet(tmp_path / "out" / "features.parquet")
    expected = batch_features(read_transactions(tiny_daily_dir).frame)
    assert_same_features(got, expected)
