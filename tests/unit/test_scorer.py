"""The scorer without Redis or HTTP: request-time features equal batch features, in-batch
order, retries, near-real-time appends, degradation with back-off and recovery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import redis
from prometheus_client import REGISTRY
from serving_support import THRESHOLD, MemoryHistories, transactions_of, world

from feature_store.transforms import (
    DEFAULT_SPEC,
    CustomerHistory,
    OnlineRequest,
    TerminalHistory,
    online_features,
)
from inference.schema import Transaction
from inference.scoring import DEFAULT, FRAUD, LEGIT, ScoredBatch, Scorer
from vigil import contract as c

pytestmark = pytest.mark.unit

FEATURES = list(DEFAULT_SPEC.features)
RETRY_S = 0.5


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_scorer(store: MemoryHistories, clock: Clock | None = None) -> tuple[Scorer,
                                                                             list[ScoredBatch]]:
    batches: list[ScoredBatch] = []
    scorer = Scorer(world().model, store, retry_after_s=RETRY_S, sink=batches.append,
                    clock=clock or Clock())
    return scorer, batches


def logged(batches: list[ScoredBatch]) -> pd.DataFrame:
    """Every scored transaction's features, score and flags, by transaction id."""
    frames = []
    for b in batches:
        frame = pd.DataFrame({name: np.asarray(b.features[name], np.float64) for name in FEATURES})
        frame[c.TRANSACTION_ID] = [t.transaction_id for t in b.transactions]
        frame["score"] = b.scores
        frame["reason"] = b.degraded_reason
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def same_customer_pair(live: pd.DataFrame) -> pd.DataFrame:
    """Two live transactions of one customer, in event order."""
    counts = live[c.CUSTOMER_ID].value_counts()
    customer = counts.index[counts >= 3][0]
    return live[live[c.CUSTOMER_ID] == customer]


def test_a_day_scored_in_batches_gets_the_batch_features_and_scores():
    w = world()
    store = w.store()
    scorer, batches = make_scorer(store)
    txs = transactions_of(w.live)
    rng = np.random.default_rng(0)
    seen_earlier_in_batch = 0
    for start in range(0, len(txs), 25):
        chunk = txs[start : start + 25]
        shuffled = [chunk[i] for i in rng.permutation(len(chunk))]  # arrival order within a batch
        results = scorer.score(shuffled, [f"r{start}"] * len(chunk))
        assert [r.transaction for r in results] == shuffled  # answered in the caller's order
        seen_earlier_in_batch += len(chunk) - len({t.customer_id for t in chunk})
    assert seen_earlier_in_batch >= 5  # customers with earlier transactions in the same batch

    log = logged(batches).set_index(c.TRANSACTION_ID)
    ids = [t.transaction_id for t in txs]
    assert sorted(log.index) == sorted(ids)
    expected = w.features.loc[ids, FEATURES]
    np.testing.assert_allclose(log.loc[ids, FEATURES].to_numpy(), expected.to_numpy(),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(log.loc[ids, "score"].to_numpy(),
                               w.model.booster.predict(expected.to_numpy(np.float64)), rtol=1e-12)
    assert log["reason"].isna().all()
    # Appended to their customers' histories (inline: no appender thread), each once.
    for t in txs:
        assert store.ids(t.customer_id).count(t.transaction_id) == 1


def test_results_carry_decisions_at_the_threshold_and_freshness():
    w = world()
    store = w.store()
    scorer, _ = make_scorer(store)
    txs = transactions_of(w.live.iloc[:40])
    unknown = Transaction("new-1", txs[0].time_us, "never-seen", "never-seen-either", 10.0)
    results = scorer.score([*txs, unknown])
    for r in results:
        assert r.decision == (FRAUD if r.score >= THRESHOLD else LEGIT)
        assert not r.degraded
    assert {r.customer_freshness for r in results[:-1]} == {"PRESENT"}
    assert (results[-1].customer_freshness, results[-1].terminal_freshness) == (
        "NOT_FOUND", "NOT_FOUND")


def test_a_retried_transaction_is_not_counted_twice():
    w = world()
    store = w.store()
    scorer, batches = make_scorer(store)
    rows = same_customer_pair(w.live)
    first, second = transactions_of(rows.iloc[:2])
    scorer.score([first])
    scorer.score([first])  # the client retried: already in the stored history
    scorer.score([second, second])  # two concurrent retries in one batch
    log = logged(batches)
    np.testing.assert_array_equal(log.iloc[0][FEATURES], log.iloc[1][FEATURES])
    np.testing.assert_array_equal(log.iloc[2][FEATURES], log.iloc[3][FEATURES])
    for t, k in ((first, 0), (second, 2)):
        np.testing.assert_allclose(log.iloc[k][FEATURES].to_numpy(np.float64),
                                   w.features.loc[t.transaction_id, FEATURES].to_numpy(np.float64),
                                   rtol=1e-9)
    assert store.ids(first.customer_id).count(first.transaction_id) == 1
    assert store.ids(first.customer_id).count(second.transaction_id) == 1


def degraded_count(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "vigil_serving_degraded_transactions_total",
        {"model_name": world().model.card.name, "reason": reason},
    )
    return value or 0.0


def test_store_errors_degrade_back_off_and_recover():
    w = world()
    store = w.store()
    clock = Clock()
    scorer, batches = make_scorer(store, clock)
    a, b, d, e, f = transactions_of(w.live.iloc[50:55])
    before = {r: degraded_count(r) for r in ("unreachable", "backoff", "timeout", "error")}

    store.read_error = store.append_error = redis.ConnectionError("connection refused")
    (result,) = scorer.score([a])
    assert result.degraded and result.customer_freshness == DEFAULT == result.terminal_freshness
    assert batches[-1].degraded_reason == "unreachable" and store.reads == 1
    # Scored with the features of a customer and a terminal without history.
    request = OnlineRequest(a.transaction_id, a.time_us, a.customer_id, a.terminal_id, a.amount)
    defaults = online_features([request], [CustomerHistory.empty()], [TerminalHistory.empty()])
    for name in FEATURES:
        np.testing.assert_allclose(batches[-1].features[name], defaults[name])
    assert batches[-1].features["CUSTOMER_ID_NB_TX_1DAY_WINDOW"][0] == 1

    # Within the back-off the store is not asked at all.
    assert scorer.score([b])[0].degraded
    assert batches[-1].degraded_reason == "backoff" and store.reads == 1
    assert not scorer.store_available

    clock.now += RETRY_S
    store.read_error = redis.TimeoutError("timed out")
    assert scorer.score([d])[0].degraded
    assert batches[-1].degraded_reason == "timeout" and store.reads == 2

    clock.now += RETRY_S
    store.read_error = redis.ResponseError("WRONGTYPE")
    assert scorer.score([e])[0].degraded
    assert batches[-1].degraded_reason == "error"
    assert scorer.appender.pending == 4  # kept for when the store answers

    # The store is back: the next batch reads it, and what was scored meanwhile is appended.
    clock.now += RETRY_S
    store.read_error = store.append_error = None
    (result,) = scorer.score([f])
    assert not result.degraded and result.customer_freshness == "PRESENT"
    assert scorer.appender.pending == 0
    for t in (a, b, d, e, f):
        assert t.transaction_id in store.ids(t.customer_id)
    after = {r: degraded_count(r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {
        "unreachable": 1, "backoff": 1, "timeout": 1, "error": 1}


def test_unconfirmed_appends_count_for_the_next_transaction_of_the_customer():
    """Reads work, appends fail: the customer's next transaction still sees the earlier one
    (the in-process overlay), so its features equal batch."""
    w = world()
    store = w.store()
    scorer, batches = make_scorer(store)
    first, second, third = transactions_of(same_customer_pair(w.live).iloc[:3])
    store.append_error = redis.TimeoutError("slow")
    scorer.score([first])
    assert first.transaction_id not in store.ids(first.customer_id)
    assert scorer.appender.pending == 1
    scorer.score([second])
    store.append_error = None
    scorer.score([third])
    assert scorer.appender.pending == 0
    log = logged(batches).set_index(c.TRANSACTION_ID)
    ids = [first.transaction_id, second.transaction_id, third.transaction_id]
    np.testing.assert_allclose(log.loc[ids, FEATURES].to_numpy(np.float64),
                               w.features.loc[ids, FEATURES].to_numpy(np.float64), rtol=1e-9)
    assert store.ids(first.customer_id)[-3:] == ids


def test_a_bug_in_the_store_is_not_taken_for_an_outage():
    w = world()
    store = w.store()
    scorer, batches = make_scorer(store)
    store.read_error = ValueError("a bug, not an outage")
    with pytest.raises(ValueError, match="a bug"):
        scorer.score(transactions_of(w.live.iloc[:1]))
    assert not batches and scorer.store_available
