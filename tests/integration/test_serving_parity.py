"""Serving computes exactly what training computed: a day of live traffic replayed through a
real server (online histories in real Redis, near-real-time appends, in-batch ordering) gives
the features of ``batch_features`` and the scores of the registered booster; and a customer
appearing twice in one request sees its earlier transaction.

The features are read back from the parquet inference log, written when the server shuts down
gracefully (SIGTERM).
"""

from __future__ import annotations

import random

import httpx
import numpy as np
import pandas as pd
import pytest

from feature_store.names import FEATURE_SERVICE
from monitoring.drift import decisions_of
from vigil import contract as c

pytestmark = pytest.mark.integration

NEW_CUSTOMER = "parity-new-customer"


@pytest.fixture(scope="module")
def replay(serving_model, online_store, tmp_path_factory, tx_instance, read_log):
    """Replays the live day, plus the in-batch and retry probes; returns the inference log."""
    from inference.client import start_server

    store = online_store()
    log_root = tmp_path_factory.mktemp("parity_log")
    server = start_server(config=store.config, extra_args=["--log-root", str(log_root)],
                          log_path=log_root.parent / "parity-server.log")
    live = serving_model.live
    rng = random.Random(7)
    answers: dict[str, dict] = {}
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            start = 0
            while start < len(live):  # event order across requests, shuffled inside each
                size = rng.choice([1, 1, 2, 3, 5, 8])
                chunk = [tx_instance(r) for _, r in live.iloc[start : start + size].iterrows()]
                rng.shuffle(chunk)
                response = http.post("/v1/models/fraud:predict", json={"instances": chunk})
                assert response.status_code == 200, response.text
                for p in response.json()["predictions"]:
                    answers[p["transaction_id"]] = p
                start += size
            # A retry of an already scored transaction.
            retried = tx_instance(live.iloc[len(live) // 2])
            again = http.post("/v1/models/fraud:predict", json={"instances": [retried]})
            assert again.status_code == 200
            # One request, one new customer three times: listed newest first; two share an
            # instant and are ordered by TRANSACTION_ID like batch featurization does.
            t0 = pd.Timestamp(live[c.TX_DATETIME].iloc[-1])
            later = t0 + pd.Timedelta(hours=2)
            probe = [
                {c.TRANSACTION_ID: tid, c.TX_DATETIME: when.isoformat(),
                 c.CUSTOMER_ID: NEW_CUSTOMER, c.TERMINAL_ID: "1", c.TX_AMOUNT: amount}
                for tid, when, amount in [("9000003", later, 30.0), ("9000002", t0, 20.0),
                                          ("9000001", t0, 10.0)]
            ]
            response = http.post("/v1/models/fraud:predict", json={"instances": probe})
            assert response.status_code == 200
            order = [p["transaction_id"] for p in response.json()["predictions"]]
            assert order == ["9000003", "9000002", "9000001"]
    finally:
        code = server.stop(timeout_s=60)
    assert code == 0, server.log_tail()
    return read_log(log_root), answers, str(retried[c.TRANSACTION_ID])


def test_replayed_day_matches_batch_features_and_scores(replay, serving_model, feature_names):
    log, answers, _ = replay
    live = serving_model.live
    ids = live[c.TRANSACTION_ID].astype(str)
    first = log.drop_duplicates(c.TRANSACTION_ID, keep="first").set_index(c.TRANSACTION_ID)
    served = first.loc[ids.to_list()]
    reference = serving_model.features.assign(
        **{c.TRANSACTION_ID: serving_model.features[c.TRANSACTION_ID].astype(str)}
    ).set_index(c.TRANSACTION_ID).loc[ids.to_list()]
    assert len(served) == len(live) == len(answers) > 200
    for name in feature_names:
        np.testing.assert_allclose(
            served[name].to_numpy(np.float64), reference[name].to_numpy(np.float64),
            rtol=1e-9, atol=1e-9, err_msg=name,
        )
    expected = serving_model.booster.predict(reference[feature_names].to_numpy(np.float64))
    np.testing.assert_allclose(served["score"].to_numpy(), expected, rtol=1e-12, atol=1e-12)
    answered = np.array([answers[i]["score"] for i in ids])
    np.testing.assert_allclose(answered, expected, rtol=1e-12, atol=1e-12)
    # The monitors read the logged decisions as batch decides (drift's decision rate).
    batch_decisions = (expected >= serving_model.card.threshold).astype(np.int64)
    assert batch_decisions.sum() > 0
    np.testing.assert_array_equal(decisions_of(served), batch_decisions)
    # The replayed customers existed before the cutoff: their histories were read.
    assert (served["customer_freshness"] != "DEFAULT").all()
    assert not served["degraded"].any()


def test_a_retried_transaction_is_not_counted_twice(replay, feature_names):
    log, _, retried = replay
    rows = log[log[c.TRANSACTION_ID] == retried]
    assert len(rows) == 2
    np.testing.assert_array_equal(rows[feature_names].iloc[0].to_numpy(),
                                  rows[feature_names].iloc[1].to_numpy())


def test_same_customer_twice_in_one_batch_sees_its_earlier_transactions(replay):
    log, _, _ = replay
    rows = log[log[c.CUSTOMER_ID] == NEW_CUSTOMER].set_index(c.TRANSACTION_ID)
    assert list(rows.loc[["9000001", "9000002", "9000003"],
                         "CUSTOMER_ID_NB_TX_1DAY_WINDOW"]) == [1, 2, 3]
    assert list(rows.loc[["9000001", "9000002", "9000003"],
                         "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"]) == [10.0, 15.0, 20.0]
    assert set(rows["customer_freshness"]) == {"NOT_FOUND"}


def test_inference_log_rows_carry_inputs_outputs_and_model(replay, serving_model,
                                                            feature_names):
    log, answers, _ = replay
    card = serving_model.card
    assert len(log) == len(answers) + 1 + 3  # replay, retry, probe: nothing lost
    assert list(log.columns[:4]) == [c.TRANSACTION_ID, c.TX_DATETIME, c.CUSTOMER_ID,
                                     c.TERMINAL_ID]
    assert set(feature_names) <= set(log.columns)
    assert (log["model_version"] == card.version).all()
    assert (log["feature_service"] == FEATURE_SERVICE).all()
    assert (log["threshold"] == card.threshold).all()
    assert set(log["decision"]) <= {"fraud", "legit"}
    assert ((log["score"] >= card.threshold) == (log["decision"] == "fraud")).all()
    assert log["logged_at"].dt.tz is not None and log["request_id"].str.len().min() > 0
    live = serving_model.live.set_index(serving_model.live[c.TRANSACTION_ID].astype(str))
    sample = log[log[c.TRANSACTION_ID].isin(live.index)].drop_duplicates(c.TRANSACTION_ID)
    assert (sample[c.TX_DATETIME].to_numpy()
            == live.loc[sample[c.TRANSACTION_ID], c.TX_DATETIME].to_numpy()).all()
