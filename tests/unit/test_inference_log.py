"""The inference log fed by a real scorer: its rows are exactly the scored batches, written
once each across flushes, and what is still buffered is written by close()."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import redis
from serving_support import THRESHOLD, transactions_of, world

from feature_store.transforms import DEFAULT_SPEC
from inference.log import RESULT_COLUMNS, InferenceLog
from inference.scoring import ScoredBatch, Scorer
from vigil import contract as c

pytestmark = pytest.mark.unit

FEATURES = list(DEFAULT_SPEC.features)


def read_log(root) -> pd.DataFrame:
    files = sorted(root.rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def expected_rows(batches: list[ScoredBatch]) -> pd.DataFrame:
    frames = []
    for b in batches:
        n = len(b.transactions)
        frame = pd.DataFrame({
            c.TRANSACTION_ID: [t.transaction_id for t in b.transactions],
            c.CUSTOMER_ID: [t.customer_id for t in b.transactions],
            c.TERMINAL_ID: [t.terminal_id for t in b.transactions],
            "time_us": [t.time_us for t in b.transactions],
            **{name: np.asarray(b.features[name], np.float64) for name in FEATURES},
            "score": b.scores,
            "decision": b.decisions,
            "degraded": [b.degraded_reason is not None] * n,
            "degraded_reason": [b.degraded_reason] * n,
            "customer_freshness": b.customer_freshness,
            "terminal_freshness": b.terminal_freshness,
            "request_id": b.request_ids,
            "logged_at_us": [b.logged_at_us] * n,
        })
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_rows_equal_the_scored_batches_and_survive_close(tmp_path):
    w = world()
    store = w.store()
    root = tmp_path / "log"
    log = InferenceLog(root, feature_names=w.model.card.feature_names,
                       model_name=w.model.card.name, rotate_rows=1_000_000, rotate_seconds=3600)
    batches: list[ScoredBatch] = []

    def sink(batch: ScoredBatch) -> None:
        batches.append(batch)
        log.append(batch)

    now = [0.0]
    scorer = Scorer(w.model, store, retry_after_s=0.5, sink=sink, clock=lambda: now[0])
    txs = transactions_of(w.live.iloc[:70])
    for k in range(3):  # each transaction a request of its own: ids differ within a batch
        scorer.score(txs[10 * k : 10 * k + 10], [f"req-{k}-{i}" for i in range(10)])
    assert log.flush() == 30  # a first file
    store.read_error = redis.ConnectionError("down")
    scorer.score(txs[30:45], ["req-degraded"] * 15)
    store.read_error = None
    now[0] += 1.0
    scorer.score(txs[45:70], ["req-last"] * 25)
    assert log.buffered_rows == 40
    assert log.close() == 40  # graceful shutdown: what is buffered is written
    assert log.buffered_rows == 0
    with pytest.raises(RuntimeError, match="closed"):
        log.append(batches[0])

    assert len(list(root.rglob("*.parquet"))) == 2 and not list(root.rglob("*.tmp"))
    table = read_log(root)
    assert list(table.columns) == [c.TRANSACTION_ID, c.TX_DATETIME, c.CUSTOMER_ID,
                                   c.TERMINAL_ID, *FEATURES, *RESULT_COLUMNS]
    expected = expected_rows(batches)
    assert table[c.TRANSACTION_ID].tolist() == expected[c.TRANSACTION_ID].tolist()
    for column in (c.CUSTOMER_ID, c.TERMINAL_ID, "decision", "customer_freshness",
                   "terminal_freshness", "request_id", "degraded"):
        assert table[column].tolist() == expected[column].tolist(), column
    assert table["degraded_reason"].tolist() == [None] * 30 + ["unreachable"] * 15 + [None] * 25
    np.testing.assert_array_equal(
        table[c.TX_DATETIME].to_numpy("datetime64[us]").astype(np.int64), expected["time_us"])
    np.testing.assert_array_equal(table[FEATURES].to_numpy(np.float64),
                                  expected[FEATURES].to_numpy(np.float64))
    np.testing.assert_array_equal(table["score"].to_numpy(), expected["score"].to_numpy())
    np.testing.assert_array_equal(
        table["logged_at"].to_numpy("datetime64[us]").astype(np.int64),
        expected["logged_at_us"].to_numpy())
    assert set(table["model_name"]) == {w.model.card.name}
    assert set(table["model_version"]) == {w.model.card.version}
    assert set(table["feature_service"]) == {w.model.card.feature_service}
    assert set(table["threshold"]) == {THRESHOLD}
