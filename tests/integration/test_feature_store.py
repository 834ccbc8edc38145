"""Feast offline retrieval is point-in-time correct; the online path equals batch (real Redis)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from feature_store import names as n
from feature_store import offline
from feature_store.config import StoreConfig
from feature_store.online import (
    FeastHistories,
    HistoryStore,
    RedisHistories,
    Status,
    delete_project_keys,
)
from feature_store.store import open_store
from feature_store.transforms import (
    DEFAULT_SPEC,
    OnlineRequest,
    batch_features,
    online_features,
    online_requests,
    to_epoch_us,
)
from vigil import contract as c
from vigil.data.simulate import SimulationConfig, simulate
from vigil.settings import Settings

pytestmark = pytest.mark.integration

CUSTOMER_FEATURES = [f for f in DEFAULT_SPEC.features if f.startswith("CUSTOMER_ID_")]
TERMINAL_FEATURES = [f for f in DEFAULT_SPEC.features if f.startswith("TERMINAL_ID_")]
TTL = pd.Timedelta(days=30)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def project(redis_client: redis.Redis) -> Iterator[str]:
    name = f"vigiltest_{uuid.uuid4().hex[:10]}"
    yield name
    delete_project_keys(redis_client, name)


@pytest.fixture
def config(tmp_path: Path, project: str) -> StoreConfig:
    home = tmp_path / "home"
    settings = Settings.model_validate({"home": home, "features": {"project": project}})
    return StoreConfig.from_settings(settings)


def _raw(sim_tx: pd.DataFrame) -> pd.DataFrame:
    tx = sim_tx.copy()
    for col in c.ID_COLUMNS:
        tx[col] = tx[col].astype(str).astype("string[pyarrow]")
    return tx


# ---------------------------------------------------------------------------------------------
# Point-in-time retrieval vs a brute-force as-of join
# ---------------------------------------------------------------------------------------------


def _feature_rows(rng: np.random.Generator, start: pd.Timestamp) -> pd.DataFrame:
    """Feature rows with late arrivals and backfills (same event time, later created)."""
    size = 400
    rows = pd.DataFrame(
        {
            c.TRANSACTION_ID: [f"f{i}" for i in range(size)],
            n.CUSTOMER_ID: rng.choice([f"c{i}" for i in range(12)], size),
            n.TERMINAL_ID: rng.choice([f"t{i}" for i in range(9)], size),
            n.EVENT_TIMESTAMP: start
            + pd.to_timedelta(rng.integers(0, 80 * 86_400, size), unit="s"),
        }
    )
    # created: usually soon after the event; 15% arrive late (days after their event time)
    late = rng.random(size) < 0.15
    delay = np.where(late, rng.integers(3, 40, size) * 86_400, rng.integers(1, 600, size))
    rows[n.CREATED] = rows[n.EVENT_TIMESTAMP] + pd.to_timedelta(delay, unit="s")
    # backfills: 60 corrections of existing rows, same entity keys and event time, created later
    fixes = rows.sample(60, random_state=1).copy()
    fixes[c.TRANSACTION_ID] = [f"fix{i}" for i in range(len(fixes))]
    fixes[n.CREATED] = fixes[n.CREATED] + pd.Timedelta(days=5)
    rows = pd.concat([rows, fixes], ignore_index=True)
    for name in CUSTOMER_FEATURES + TERMINAL_FEATURES:
        if "_NB_TX_" in name:
            rows[name] = rng.integers(0, 1000, len(rows)).astype(np.int64)
        else:
            rows[name] = rng.random(len(rows))
    for col in (n.EVENT_TIMESTAMP, n.CREATED):
        rows[col] = rows[col].dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    return rows


def _as_of(rows: pd.DataFrame, key: str, value: str, at: pd.Timestamp, names: list[str]) -> dict:
    """Feast's semantics by hand: the latest event at or before ``at`` within the TTL; among
    rows with that event time the latest created wins."""
    mine = rows[
        (rows[key] == value)
        & (rows[n.EVENT_TIMESTAMP] <= at)
        & (rows[n.EVENT_TIMESTAMP] >= at - TTL)
    ]
    if mine.empty:
        return dict.fromkeys(names, np.nan)
    best = mine.sort_values([n.EVENT_TIMESTAMP, n.CREATED]).iloc[-1]
    return {name: best[name] for name in names}


def test_training_set_is_point_in_time_correct(config: StoreConfig) -> None:
    rng = np.random.default_rng(11)
    start = pd.Timestamp("2021-03-01")
    rows = _feature_rows(rng, start)
    folder = config.data_dir
    folder.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pandas(rows, preserve_index=False), folder / n.TRANSACTION_FEATURES_FILE
    )
    store = open_store(config, online="sqlite")

    size = 600
    entities = pd.DataFrame(
        {
            c.TRANSACTION_ID: [f"e{i}" for i in range(size)],
            c.CUSTOMER_ID: rng.choice([f"c{i}" for i in range(14)], size),  # c12, c13: unknown
            c.TERMINAL_ID: rng.choice([f"t{i}" for i in range(10)], size),  # t9: unknown
            c.TX_DATETIME: (
                start + pd.to_timedelta(rng.integers(-5 * 86_400, 90 * 86_400, size), unit="s")
            ).astype("datetime64[us]"),
            c.TX_AMOUNT: rng.random(size) * 100,
        }
    )
    # entity rows exactly on feature event times: the row itself is visible (<=)
    exact = rows.sample(80, random_state=2)
    entities.loc[: len(exact) - 1, c.CUSTOMER_ID] = exact[n.CUSTOMER_ID].to_numpy()
    entities.loc[: len(exact) - 1, c.TX_DATETIME] = (
        exact[n.EVENT_TIMESTAMP].dt.tz_localize(None).astype("datetime64[us]").to_numpy()
    )

    got = offline.training_set(store, entities, allow_missing=True)
    at = offline.join_timestamps(entities)
    mismatches = 0
    leaks = 0
    for i in range(size):
        expected = _as_of(
            rows, n.CUSTOMER_ID, entities.at[i, c.CUSTOMER_ID], at[i], CUSTOMER_FEATURES
        )
        expected |= _as_of(
            rows, n.TERMINAL_ID, entities.at[i, c.TERMINAL_ID], at[i], TERMINAL_FEATURES
        )
        for name, value in expected.items():
            actual = got.at[i, name]
            same = (np.isnan(value) and np.isnan(actual)) or np.isclose(
                actual, value, rtol=0, atol=0
            )
            mismatches += not same
        # leakage: no joined value may come only from rows after the entity's time
        future = rows[
            (rows[n.CUSTOMER_ID] == entities.at[i, c.CUSTOMER_ID])
            & (rows[n.EVENT_TIMESTAMP] > at[i])
        ]
        for name in CUSTOMER_FEATURES:
            value = got.at[i, name]
            if (
                not np.isnan(value)
                and (future[name] == value).any()
                and not (
                    rows[
                        (rows[n.CUSTOMER_ID] == entities.at[i, c.CUSTOMER_ID])
                        & (rows[n.EVENT_TIMESTAMP] <= at[i])
                    ][name]
                    == value
                ).any()
            ):
                leaks += 1
    assert mismatches == 0
    assert leaks == 0
    # the cases the test is about really occur
    assert got[CUSTOMER_FEATURES[0]].isna().sum() > 10  # unknown entities and outside the TTL
    assert got[CUSTOMER_FEATURES[0]].notna().sum() > 300
    backfilled = rows[rows[c.TRANSACTION_ID].str.startswith("fix")]
    originals = rows.merge(
        backfilled[[n.CUSTOMER_ID, n.EVENT_TIMESTAMP]], on=[n.CUSTOMER_ID, n.EVENT_TIMESTAMP]
    )
    assert len(originals) >= 2 * len(backfilled)


def test_training_set_equals_batch_features(config: StoreConfig) -> None:
    sim = simulate(SimulationConfig(n_customers=150, n_terminals=200, n_days=40, seed=4))
    tx = _raw(sim.transactions)
    # two transactions of one customer in the same second: each must join its own row
    tie = tx.iloc[500].copy()
    tie[c.TRANSACTION_ID] = "999999"
    tie[c.TX_AMOUNT] = 777.0
    tx = pd.concat([tx, tie.to_frame().T.astype(tx.dtypes.to_dict())], ignore_index=True)
    features = batch_features(tx)
    offline.write_sources(config.data_dir, tx, features)
    store = open_store(config, online="sqlite")
    window = tx[(tx[c.TX_DATETIME] >= "2018-04-20") & (tx[c.TX_DATETIME] < "2018-05-01")]
    window = pd.concat([window, tx.iloc[[500, len(tx) - 1]]])
    got = offline.training_set(store, window)
    expected = features.loc[window.index].reset_index(drop=True)
    _assert_same_features(got, expected, tolerance=1e-12)
    assert got[c.TX_FRAUD].tolist() == expected[c.TX_FRAUD].tolist()
    tied = got[got[c.TRANSACTION_ID].isin([tx.at[500, c.TRANSACTION_ID], "999999"])]
    assert tied["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].nunique() == 2


def test_training_set_refuses_transactions_without_features(config: StoreConfig) -> None:
    sim = simulate(SimulationConfig(n_customers=30, n_terminals=30, n_days=10, seed=1))
    tx = _raw(sim.transactions)
    offline.write_sources(config.data_dir, tx, batch_features(tx))
    store = open_store(config, online="sqlite")
    stranger = tx.iloc[:3].copy()
    stranger[c.CUSTOMER_ID] = "nobody"
    with pytest.raises(Exception, match="no row in the offline store"):
        offline.training_set(store, stranger)


# ---------------------------------------------------------------------------------------------
# Online path: replay transaction by transaction, compare with batch
# ---------------------------------------------------------------------------------------------


def _requests(frame: pd.DataFrame) -> list[OnlineRequest]:
    return online_requests(frame.iloc[offline.event_order(frame)])


def _replay(store, requests: list[OnlineRequest]) -> tuple[pd.DataFrame, Counter]:
    rows, statuses = [], Counter()
    for req in requests:
        read = store.read([req])
        feats = online_features([req], read.customers, read.terminals)
        rows.append({c.TRANSACTION_ID: req.transaction_id} | {k: v[0] for k, v in feats.items()})
        statuses[("customer", read.customer_status[0])] += 1
        statuses[("terminal", read.terminal_status[0])] += 1
        store.append([req], read)
    return pd.DataFrame(rows), statuses


@pytest.fixture(scope="module")
def replay_data() -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    sim = simulate(SimulationConfig(n_customers=400, n_terminals=800, n_days=45, seed=9))
    tx = _raw(sim.transactions)
    cutoff = pd.Timestamp("2018-05-10 00:00:00")
    # customers that first appear after the cutoff: NOT_FOUND must give batch's values too
    newcomers = tx[tx[c.TX_DATETIME] > cutoff].head(40).copy()
    newcomers[c.CUSTOMER_ID] = [f"new{i % 13}" for i in range(len(newcomers))]
    newcomers[c.TRANSACTION_ID] = [f"n{i}" for i in range(len(newcomers))]
    tx = pd.concat([tx, newcomers], ignore_index=True)
    return tx, batch_features(tx), cutoff


def _load(store: HistoryStore, tx: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Load the batch snapshots of ``tx`` up to ``cutoff``; the history before it."""
    history = tx[tx[c.TX_DATETIME] <= cutoff]
    assert store.write_customer_snapshot(offline.customer_snapshot(history, cutoff)) > 300
    assert store.write_terminal_snapshot(offline.terminal_snapshot(history, cutoff)) > 700
    return history


def _assert_same_features(actual: pd.DataFrame, expected: pd.DataFrame, tolerance: float) -> None:
    """Every model feature of row i equal in both frames (relative and absolute tolerance)."""
    for name in DEFAULT_SPEC.features:
        np.testing.assert_allclose(
            actual[name].to_numpy(float),
            expected[name].to_numpy(float),
            rtol=tolerance,
            atol=tolerance,
            err_msg=name,
        )


def _assert_parity(online: pd.DataFrame, features: pd.DataFrame) -> None:
    expected = features.set_index(c.TRANSACTION_ID).loc[online[c.TRANSACTION_ID]]
    _assert_same_features(online, expected, tolerance=1e-9)


def test_online_replay_equals_batch_in_redis(
    replay_data: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp],
    redis_client: redis.Redis,
    project: str,
) -> None:
    tx, features, cutoff = replay_data
    store = RedisHistories(redis_client, project)
    _load(store, tx, cutoff)
    replay = tx[(tx[c.TX_DATETIME] > cutoff) & (tx[c.TX_DATETIME] <= cutoff + timedelta(days=3))]
    online, statuses = _replay(store, _requests(replay))
    assert len(online) > 2000
    _assert_parity(online, features)
    assert statuses[("customer", Status.NOT_FOUND)] >= 13  # the newcomers' first transactions
    assert statuses[("terminal", Status.PRESENT)] == len(online)


def test_feast_client_reads_what_vigil_writes(
    replay_data: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp],
    config: StoreConfig,
    redis_client: redis.Redis,
    project: str,
) -> None:
    """The fast path is Feast's own Redis layout: Feast's SDK reads the same histories."""
    tx, _, cutoff = replay_data
    store = RedisHistories(redis_client, project)
    _load(store, tx, cutoff)
    requests = _requests(tx[tx[c.TX_DATETIME] > cutoff].head(200))
    store.append(requests[:50])
    feast = FeastHistories(open_store(config, online="redis"))
    ours, theirs = store.read(requests), feast.read(requests)
    for a, b in zip(ours.customers, theirs.customers, strict=True):
        assert a.time_us.tolist() == b.time_us.tolist()
        assert a.amount.tolist() == b.amount.tolist()
        assert a.transaction_id == b.transaction_id
    for a, b in zip(ours.terminals, theirs.terminals, strict=True):
        assert a.available_us.tolist() == b.available_us.tolist()
        assert a.fraud.tolist() == b.fraud.tolist()
    assert ours.customer_status == theirs.customer_status
    assert sum(len(h.time_us) for h in ours.customers) > 1000


def test_online_replay_equals_batch_through_feast_sqlite(
    replay_data: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp], config: StoreConfig
) -> None:
    """The SQLite fallback (no Redis) serves the same features."""
    tx, features, cutoff = replay_data
    store = FeastHistories(open_store(config, online="sqlite"))
    _load(store, tx, cutoff)
    replay = tx[(tx[c.TX_DATETIME] > cutoff) & (tx[c.TX_DATETIME] <= cutoff + timedelta(hours=12))]
    online, _ = _replay(store, _requests(replay))
    assert len(online) > 200
    _assert_parity(online, features)


def test_stale_and_missing_entities_get_defaults_and_are_counted(
    replay_data: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp],
    redis_client: redis.Redis,
    project: str,
) -> None:
    tx, _, cutoff = replay_data
    store = RedisHistories(redis_client, project)
    known = _load(store, tx, cutoff).iloc[-1]
    late = int(to_epoch_us(pd.Series([cutoff + timedelta(days=8)]))[0])
    requests = [
        OnlineRequest("x1", late, str(known[c.CUSTOMER_ID]), str(known[c.TERMINAL_ID]), 10.0),
        OnlineRequest("x2", late, "ghost", "nowhere", 10.0),
    ]
    read = store.read(requests)
    # the terminal snapshot is 8 days old, more than the 7-day label delay: stale
    assert read.terminal_status == [Status.OUTSIDE_MAX_AGE, Status.NOT_FOUND]
    assert read.customer_status == [Status.PRESENT, Status.NOT_FOUND]
    feats = online_features(requests, read.customers, read.terminals)
    # defaults: the features of an entity with no history, never silently missing values
    assert feats["TERMINAL_ID_NB_TX_30DAY_WINDOW"].tolist() == [0, 0]
    assert feats["TERMINAL_ID_RISK_30DAY_WINDOW"].tolist() == [0.0, 0.0]
    assert feats["CUSTOMER_ID_NB_TX_1DAY_WINDOW"][1] == 1
    assert feats["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"][1] == 10.0


def test_snapshot_keeps_transactions_appended_after_its_cutoff(
    replay_data: tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp],
    redis_client: redis.Redis,
    project: str,
) -> None:
    """Materializing a batch must not lose what the server appended since the cutoff."""
    tx, _, cutoff = replay_data
    history = tx[tx[c.TX_DATETIME] <= cutoff]
    store = RedisHistories(redis_client, project)
    snapshot = offline.customer_snapshot(history, cutoff)
    store.write_customer_snapshot(snapshot)
    after = _requests(tx[tx[c.TX_DATETIME] > cutoff].head(30))
    store.append(after)
    store.write_customer_snapshot(snapshot)  # the same batch again, e.g. a retried job
    read = store.read(after)
    for req, hist in zip(after, read.customers, strict=True):
        assert hist.transaction_id.count(req.transaction_id) == 1
    # appending the same transaction twice (a client retry) does not count it twice
    store.append(after[:5])
    again = store.read(after[:5])
    for req, hist in zip(after[:5], again.customers, strict=True):
        assert hist.transaction_id.count(req.transaction_id) == 1
