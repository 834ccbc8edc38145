"""Same-instant transactions get the same features in batch, offline and online (issue 10).

One customer with a history makes eight transactions at one instant, with the ids on which the
executors used to disagree (DuckDB's TRY_CAST took ``1e3`` for 1000, pandas' to_numeric
``9223372036854775808`` for a number, serving's regex refused the 19-digit int64); a new
customer makes nine more at another instant, with ids of equal value (``0``, ``-0``, ``+0``,
``00``), the int64 bounds and digits that are not ASCII. Batch features (DuckDB) are the
reference; then

* the Scorer, reading and appending real Redis, scores the live day in batches whose
  transactions arrive shuffled;
* the online store is replayed one transaction at a time in offline event order;
* Feast's point-in-time retrieval joins each tied transaction to its own feature row;

and every feature agrees to 1e-9.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store import offline
from feature_store.config import StoreConfig
from feature_store.online import RedisHistories, delete_project_keys, redis_client
from feature_store.store import open_store
from feature_store.transforms import (
    DEFAULT_SPEC,
    batch_features,
    online_features,
    online_requests,
    to_epoch_us,
)
from inference.schema import Transaction
from inference.scoring import ScoredBatch, Scorer
from vigil import contract as c
from vigil.data.simulate import SimulationConfig, simulate
from vigil.ordering import id_order_key
from vigil.registry import LoadedModel
from vigil.settings import Settings

pytestmark = pytest.mark.integration

KNOWN_IDS = ["1234567890123456789", "1e3", "9223372036854775808", "-5", "+5", "007", "7", "abc"]
NEW_IDS = ["0", "-0", "+0", "00", "9223372036854775807", "-9223372036854775808", "١٢", " 5", "5 "]
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp, str]:
    """Transactions (ids as strings), their batch features, the snapshot cutoff, and the
    customer with a history who makes the KNOWN_IDS transactions."""
    sim = simulate(SimulationConfig(n_customers=150, n_terminals=300, n_days=40, seed=21))
    tx = sim.transactions.copy()
    tx[c.TRANSACTION_ID] = tx[c.TRANSACTION_ID].astype(np.int64) + 1_000_000  # clear of '7'
    cutoff = pd.Timestamp("2018-05-06")
    first_live = tx[tx[c.TX_DATETIME] > cutoff].iloc[0]
    customer, terminal = first_live[c.CUSTOMER_ID], first_live[c.TERMINAL_ID]
    rng = np.random.default_rng(5)
    tied = []
    for ids, who, at in (
        (KNOWN_IDS, customer, cutoff + pd.Timedelta(hours=9, minutes=30)),
        (NEW_IDS, "same-instant-newcomer", cutoff + pd.Timedelta(hours=14)),
    ):
        rows = pd.DataFrame({
            c.TRANSACTION_ID: ids,
            c.TX_DATETIME: at,
            c.CUSTOMER_ID: who,
            c.TERMINAL_ID: terminal,
            c.TX_AMOUNT: rng.uniform(1, 300, len(ids)).round(2),
            c.TX_FRAUD: 0,
        })
        tied.append(rows)
    tx = pd.concat([tx, *tied], ignore_index=True)
    for col in c.ID_COLUMNS:
        tx[col] = tx[col].astype(str).astype("string[pyarrow]")
    tx[c.TX_DATETIME] = tx[c.TX_DATETIME].astype("datetime64[us]")
    tx = tx.sample(frac=1.0, random_state=3).reset_index(drop=True)  # row order means nothing
    return tx, batch_features(tx), cutoff, str(customer)


@pytest.fixture
def histories(data) -> Iterator[RedisHistories]:
    """The snapshots at the cutoff in real Redis, under a project of this test's own."""
    tx, _, cutoff, _ = data
    client = redis_client(REDIS_URL, 5.0)
    project = f"vigil_ties_{uuid.uuid4().hex[:10]}"
    store = RedisHistories(client, project)
    history = tx[tx[c.TX_DATETIME] <= cutoff]
    store.write_customer_snapshot(offline.customer_snapshot(history, cutoff))
    store.write_terminal_snapshot(offline.terminal_snapshot(history, cutoff))
    yield store
    delete_project_keys(client, project)
    client.close()


def _live(tx: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    keep = (tx[c.TX_DATETIME] > cutoff) & (tx[c.TX_DATETIME] <= cutoff + pd.Timedelta(days=1))
    return tx[keep]


def _assert_parity(online: pd.DataFrame, features: pd.DataFrame) -> None:
    expected = features.set_index(c.TRANSACTION_ID).loc[online[c.TRANSACTION_ID]]
    for name in DEFAULT_SPEC.features:
        np.testing.assert_allclose(
            online[name].to_numpy(np.float64), expected[name].to_numpy(np.float64),
            rtol=1e-9, atol=1e-9, err_msg=name,
        )


def _assert_counted_in_the_one_order(features: pd.DataFrame) -> None:
    """The tied transactions count one after another in id_order_key order (so a different
    order anywhere would show as a mismatch, not hide in equal values)."""
    by_id = features.set_index(c.TRANSACTION_ID)
    for ids in (KNOWN_IDS, NEW_IDS):
        ordered = sorted(ids, key=id_order_key)
        counts = by_id.loc[ordered, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"].to_numpy()
        assert (np.diff(counts) == 1).all(), (ordered, counts)
    assert sorted(KNOWN_IDS, key=id_order_key) == [
        "-5", "+5", "007", "7", "1234567890123456789", "1e3", "9223372036854775808", "abc",
    ]


def test_scorer_with_shuffled_batches_equals_batch(data, histories, serving_model) -> None:
    tx, features, cutoff, _ = data
    _assert_counted_in_the_one_order(features)
    batches: list[ScoredBatch] = []
    scorer = Scorer(LoadedModel(serving_model.booster, serving_model.card), histories,
                    retry_after_s=0.5, sink=batches.append)  # appends inline, after each batch
    live = _live(tx, cutoff)
    live = live.iloc[offline.event_order(live)]
    instants = live[c.TX_DATETIME].drop_duplicates().tolist()
    rng = random.Random(11)
    start = 0
    while start < len(instants):  # one to three instants per batch, shuffled inside
        size = rng.choice([1, 2, 3])
        chunk = live[live[c.TX_DATETIME].isin(instants[start : start + size])]
        transactions = [
            Transaction(r.TRANSACTION_ID, int(to_epoch_us(pd.Series([r.TX_DATETIME]))[0]),
                        r.CUSTOMER_ID, r.TERMINAL_ID, float(r.TX_AMOUNT))
            for r in chunk.itertuples(index=False)
        ]
        rng.shuffle(transactions)
        results = scorer.score(transactions)
        assert not any(r.degraded for r in results)
        start += size
    rows = [
        {c.TRANSACTION_ID: t.transaction_id} | {k: float(v[i]) for k, v in b.features.items()}
        for b in batches
        for i, t in enumerate(b.transactions)
    ]
    online = pd.DataFrame(rows)
    assert len(online) == len(live) > 150
    assert set(KNOWN_IDS + NEW_IDS) <= set(online[c.TRANSACTION_ID])
    _assert_parity(online, features)


def test_online_replay_in_offline_event_order_equals_batch(data, histories) -> None:
    tx, features, cutoff, customer = data
    live = _live(tx, cutoff)
    rows = []
    for request in online_requests(live.iloc[offline.event_order(live)]):
        read = histories.read([request])
        values = online_features([request], read.customers, read.terminals)
        rows.append({c.TRANSACTION_ID: request.transaction_id}
                    | {k: v[0] for k, v in values.items()})
        histories.append([request], read)
    online = pd.DataFrame(rows)
    _assert_parity(online, features)
    known = online[online[c.TRANSACTION_ID].isin(KNOWN_IDS)]
    assert (known["CUSTOMER_ID_NB_TX_30DAY_WINDOW"] > len(KNOWN_IDS)).all()  # had a history
    assert customer in set(live[c.CUSTOMER_ID])


def test_point_in_time_retrieval_joins_each_tied_transaction_its_own_row(
    data, tmp_path: Path
) -> None:
    tx, features, _, _ = data
    settings = Settings.model_validate(
        {"home": tmp_path / "home", "features": {"project": f"ties_{uuid.uuid4().hex[:8]}"}}
    )
    config = StoreConfig.from_settings(settings)
    offline.write_sources(config.data_dir, tx, features)
    tied = tx[tx[c.TRANSACTION_ID].isin(KNOWN_IDS + NEW_IDS)].sample(frac=1.0, random_state=2)
    got = offline.training_set(open_store(config, online="sqlite"), tied)
    _assert_parity(got, features)
