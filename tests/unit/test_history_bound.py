"""Bounded work per card (issue 14), without Redis or HTTP.

A busy card's history as features see it holds the newest ``history_bound`` entries: its
features equal batch features computed over those entries only (the documented effect of the
bound), whether its earlier transactions are in the store, still queued for appending, or
earlier in the same batch. Appends go in bundles of bounded size, so a failing store never
turns into a retry of an ever-growing bundle, and shutdown says truthfully what the store
holds."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import redis
from serving_support import MemoryHistories, transactions_of, world

from feature_store.online import HistoryLimits
from feature_store.transforms import DEFAULT_SPEC, OnlineRequest, batch_features
from inference.scoring import Appender, ScoredBatch, Scorer
from vigil import contract as c

pytestmark = pytest.mark.unit

FEATURES = list(DEFAULT_SPEC.features)
BOUND = 40
HOT = 150


def hot_card() -> tuple[str, pd.DataFrame]:
    """The busiest customer of the world, and 150 transactions of it within two hours after
    the cutoff (a card-testing burst) on one of its terminals."""
    w = world()
    before = w.transactions[w.transactions[c.TX_DATETIME] <= w.cutoff]
    customer = before[c.CUSTOMER_ID].value_counts().index[0]
    terminal = before.loc[before[c.CUSTOMER_ID] == customer, c.TERMINAL_ID].iloc[-1]
    rng = np.random.default_rng(3)
    seconds = np.sort(rng.choice(7200, size=HOT, replace=False))
    burst = pd.DataFrame({
        c.TRANSACTION_ID: np.arange(HOT) + 10_000_000,
        c.TX_DATETIME: w.cutoff + pd.Timedelta(hours=1) + pd.to_timedelta(seconds, unit="s"),
        c.CUSTOMER_ID: customer,
        c.TERMINAL_ID: terminal,
        c.TX_AMOUNT: np.round(rng.uniform(1, 300, HOT), 2),
        c.TX_FRAUD: 0,
    })
    return str(customer), burst


def bounded_reference(burst: pd.DataFrame, k: int) -> pd.Series:
    """Batch features of burst transaction ``k`` when its card's earlier transactions are only
    its newest ``BOUND`` (what the online history keeps), everything else unchanged: the older
    ones move to another card, so that its terminals still count them."""
    w = world()
    columns = [*c.KEY_COLUMNS, c.TX_AMOUNT, c.TX_FRAUD]
    tx = w.transactions.loc[w.transactions[c.TX_DATETIME] <= w.cutoff, columns]
    customer = burst[c.CUSTOMER_ID].iloc[0]
    mine = tx[tx[c.CUSTOMER_ID] == customer].sort_values([c.TX_DATETIME, c.TRANSACTION_ID])
    earlier = pd.concat([mine, burst.iloc[:k]], ignore_index=True) if k else mine
    older = earlier.iloc[: max(0, len(earlier) - BOUND)].assign(**{c.CUSTOMER_ID: "elsewhere"})
    frame = pd.concat([
        tx[tx[c.CUSTOMER_ID] != customer], older, earlier.iloc[len(older):], burst.iloc[[k]],
    ], ignore_index=True)
    return batch_features(frame).iloc[-1]


@pytest.mark.parametrize("appends", ["stored", "queued"])
def test_a_busy_cards_features_are_batch_features_over_its_newest_entries(appends):
    """Issue 14: a card's history had no bound, so its features' work grew with its traffic.
    With the bound, features over the newest entries are exact: equal to batch over them, be
    the entries in the store (``stored``) or still queued because appends fail (``queued``:
    the overlay gives what the store would hold)."""
    w = world()
    start = w.store()
    store = MemoryHistories(start.customers, start.terminals,
                            HistoryLimits(max_entries=BOUND, append_max_events=8))
    if appends == "queued":
        store.append_error = redis.ConnectionError("appends fail")
    batches: list[ScoredBatch] = []
    scorer = Scorer(w.model, store, retry_after_s=0.5, sink=batches.append,
                    history_bound=BOUND)
    customer, burst = hot_card()
    txs = transactions_of(burst)
    rng = np.random.default_rng(0)
    for begin in range(0, HOT, 10):  # batches of ten, shuffled: in-batch order counts too
        chunk = txs[begin : begin + 10]
        scorer.score([chunk[i] for i in rng.permutation(len(chunk))])
    if appends == "queued":
        assert scorer.appender.pending == HOT
    else:
        assert len(store.customers[customer].transaction_id) == BOUND
    served = pd.concat([
        pd.DataFrame({name: np.asarray(b.features[name], np.float64) for name in FEATURES},
                     index=[t.transaction_id for t in b.transactions])
        for b in batches
    ])
    assert served["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].max() == BOUND + 1
    for k in (0, 1, 9, 10, 39, 40, 41, 77, HOT - 1):
        expected = bounded_reference(burst, k)
        got = served.loc[str(burst[c.TRANSACTION_ID].iloc[k])]
        np.testing.assert_allclose(got[FEATURES].to_numpy(np.float64),
                                   expected[FEATURES].to_numpy(np.float64),
                                   rtol=1e-9, atol=1e-9, err_msg=f"burst transaction {k}")


def requests_of(customer: str, first: int, n: int) -> list[OnlineRequest]:
    return [OnlineRequest(f"t{k}", 1_530_000_000_000_000 + k, customer, "T", 1.0)
            for k in range(first, first + n)]


def test_a_failing_store_is_retried_with_bundles_of_bounded_size():
    """Issue 14: while Redis refused, every retry merged everything queued into one bundle
    (34,006 transactions, retried every 0.5 s with a 1 s timeout: it could never succeed).
    Now each attempt carries at most ``max_bundle`` transactions, the failed one stays first,
    and once the store answers the backlog goes in bundles of that size."""
    store = MemoryHistories({}, {}, HistoryLimits(max_entries=500, append_max_events=16))
    store.append_error = redis.TimeoutError("Timeout reading from socket")
    appender = Appender(store, model_name="fraud_unit", retry_after_s=0.5, max_bundle=100,
                        threaded=False)
    for k in range(40):
        appender.submit(requests_of(f"c{k % 3}", 50 * k, 50), None)
        assert appender.drain() is False
    assert appender.pending == 2000
    assert max(store.append_sizes) == 100
    store.append_error = None
    store.append_sizes.clear()
    assert appender.drain() is True
    assert store.append_sizes == [100] * 20 and appender.pending == 0
    assert sum(len(store.customers[f"c{k}"].transaction_id) for k in range(3)) == 1500


def test_a_large_submission_is_split_and_what_went_through_stays_confirmed():
    store = MemoryHistories({}, {})
    appender = Appender(store, model_name="fraud_unit", retry_after_s=0.5, max_bundle=64,
                        threaded=False)
    appender.submit(requests_of("c", 0, 150), None)
    assert appender.drain() is True
    assert store.append_sizes == [64, 64, 22] and appender.pending == 0


def test_pending_events_hand_out_the_newest_of_a_long_backlog():
    store = MemoryHistories({}, {})
    store.append_error = redis.ConnectionError("down")
    appender = Appender(store, model_name="fraud_unit", retry_after_s=0.5, history_bound=30,
                        threaded=False)
    appender.submit(requests_of("hot", 0, 5000), None)
    appender.submit(requests_of("calm", 0, 3), None)
    events = appender.pending_events({"hot", "calm", "absent"})
    assert [tid for _, _, tid in events["hot"]] == [f"t{k}" for k in range(4970, 5000)]
    assert [tid for _, _, tid in events["calm"]] == ["t0", "t1", "t2"]
    assert "absent" not in events


def closing_log(caplog: pytest.LogCaptureFixture, store: MemoryHistories) -> tuple[int, str]:
    appender = Appender(store, model_name="fraud_unit", retry_after_s=0.05, threaded=False)
    appender.submit(requests_of("a", 0, 200) + requests_of("b", 0, 100), None)
    with caplog.at_level(logging.INFO, logger="inference.scoring"):
        left = appender.close(timeout_s=0.2)
    return left, "\n".join(r.getMessage() for r in caplog.records if "scored" in r.getMessage())


def test_shutdown_says_what_timed_out_appends_wrote(caplog):
    """Issue 14: the server logged "34006 scored transactions were not appended" while Redis
    held all of them (the script finished after the client's timeout). Now what could not be
    confirmed is looked up in the store."""
    store = MemoryHistories({}, {})
    store.append_error_after_write = redis.TimeoutError("Timeout reading from socket")
    left, text = closing_log(caplog, store)
    assert left == 0
    assert "300 scored transactions whose appends timed out are in the online store" in text
    assert "not in the online store" not in text


def test_shutdown_names_the_transactions_the_store_does_not_hold(caplog):
    store = MemoryHistories({}, {})
    store.append_error = redis.ConnectionError("Connection refused")
    left, text = closing_log(caplog, store)
    assert left == 300
    assert "300 scored transactions are not in the online store: their appends failed" in text


def test_shutdown_says_when_the_store_cannot_tell(caplog):
    store = MemoryHistories({}, {})
    store.append_error = store.read_error = redis.ConnectionError("Connection refused")
    left, text = closing_log(caplog, store)
    assert left == 300
    assert "300 scored transactions could not be confirmed as appended" in text
    assert "Connection refused" in text


def test_the_newest_confirmed_append_is_exported():
    """Freshness (issue 13): the event time of the newest transaction confirmed in the store
    and the wall time of the last confirmed append; a failed append moves neither."""
    from prometheus_client import REGISTRY

    def value(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"model_name": "fraud_fresh"})

    store = MemoryHistories({}, {}, HistoryLimits(max_entries=500, append_max_events=16))
    appender = Appender(store, model_name="fraud_fresh", retry_after_s=0.5, threaded=False)
    appender.submit(requests_of("c1", 0, 5), None)
    assert appender.drain() is True
    newest = max(r.time_us for r in requests_of("c1", 0, 5)) / 1e6
    assert value("vigil_serving_feature_append_newest_timestamp_seconds") == newest
    appended_at = value("vigil_serving_feature_append_last_success_timestamp_seconds")
    assert appended_at is not None and appended_at > 1.7e9
    store.append_error = redis.TimeoutError("down")
    appender.submit(requests_of("c1", 5, 5), None)
    assert appender.drain() is False
    assert value("vigil_serving_feature_append_newest_timestamp_seconds") == newest
