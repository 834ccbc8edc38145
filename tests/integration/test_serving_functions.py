"""The serving functions without HTTP: request validation, event order, the scorer and the
appender against real Redis (DESIGN principle 1: logic in plain functions, tested directly)."""

from __future__ import annotations

import struct
from datetime import datetime

import numpy as np
import orjson
import pytest

from feature_store.online import RedisHistories, redis_client
from feature_store.transforms import CustomerHistory, OnlineRequest
from inference.client import free_port
from inference.schema import (
    Limits,
    RequestError,
    Transaction,
    decode_v2,
    parse_v1,
    to_epoch_us,
)
from inference.scoring import (
    DEFAULT,
    Appender,
    Scorer,
    event_order,
    histories_before,
    without_transaction,
)
from vigil import contract as c
from vigil.ordering import id_order_key
from vigil.registry import LoadedModel
from vigil.settings import load_settings

pytestmark = pytest.mark.integration

CLOCK = to_epoch_us(datetime(2018, 6, 1))
LIMITS = Limits(max_instances=10, max_future_skew_s=60)


def v1(**fields: object) -> dict:
    base = {c.TX_DATETIME: "2018-05-06T10:00:00", c.CUSTOMER_ID: 7, c.TERMINAL_ID: "t9",
            c.TX_AMOUNT: 10}
    base.update(fields)
    return {"instances": [base]}


def test_timestamps_are_utc_microseconds():
    naive = parse_v1(v1(), LIMITS, CLOCK).transactions[0]
    assert naive.time_us == to_epoch_us(datetime(2018, 5, 6, 10))
    for text in ("2018-05-06T12:00:00+02:00", "2018-05-06T10:00:00Z", "2018-05-06 10:00:00",
                 "2018-05-06T10:00:00.000000"):
        parsed = parse_v1(v1(TX_DATETIME=text), LIMITS, CLOCK).transactions[0]
        assert parsed.time_us == naive.time_us, text
    micro = parse_v1(v1(TX_DATETIME="2018-05-06T10:00:00.000123"), LIMITS, CLOCK)
    assert micro.transactions[0].time_us == naive.time_us + 123
    assert naive.customer_id == "7" and naive.amount == 10.0 and naive.generated_id
    within = parse_v1(v1(TX_DATETIME="2018-06-01T00:00:59"), LIMITS, CLOCK).transactions[0]
    assert within.time_us == to_epoch_us(datetime(2018, 6, 1, 0, 0, 59))
    with pytest.raises(RequestError, match="ahead of the server clock"):
        parse_v1(v1(TX_DATETIME="2018-06-01T00:01:01"), LIMITS, CLOCK)


def test_v2_binary_tensors_decode_like_json():
    header = {"id": "x", "inputs": [
        {"name": "tx_datetime", "datatype": "BYTES", "shape": [2],
         "parameters": {"binary_data_size": 2 * (4 + 19)}},
        {"name": c.CUSTOMER_ID, "datatype": "INT32", "shape": [2, 1], "data": [[1], [2]]},
        {"name": c.TERMINAL_ID, "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
        {"name": c.TX_AMOUNT, "datatype": "FP32", "shape": [2],
         "parameters": {"binary_data_size": 8}},
    ]}
    raw = orjson.dumps(header)
    stamps = b"".join(struct.pack("<I", 19) + b"2018-05-06T10:00:0" + str(i).encode()
                      for i in range(2))
    body = raw + stamps + struct.pack("<2f", 1.5, 2.5)
    request = decode_v2(body, len(raw), LIMITS, CLOCK)
    assert request.request_id == "x" and request.protocol == "v2"
    assert [t.amount for t in request.transactions] == [1.5, 2.5]
    assert [t.customer_id for t in request.transactions] == ["1", "2"]
    assert request.transactions[1].time_us - request.transactions[0].time_us == 1_000_000


def test_event_order_follows_batch_featurization():
    assert sorted(["10", "9", "b", "a", "100"], key=id_order_key) == ["9", "10", "100", "a", "b"]
    txs = [Transaction("2", 5, "c", "t", 1.0), Transaction("x", 5, "c", "t", 1.0),
           Transaction("1", 5, "c", "t", 1.0), Transaction("0", 4, "c", "t", 1.0)]
    assert event_order(txs) == [3, 2, 0, 1]


def test_histories_before_sees_earlier_requests_of_the_batch_and_not_itself():
    stored = CustomerHistory(np.array([1, 2], np.int64), np.array([5.0, 6.0]), ["a", "b"])
    requests = [OnlineRequest("b", 3, "c1", "t", 7.0), OnlineRequest("n", 4, "c1", "t", 8.0),
                OnlineRequest("z", 4, "c2", "t", 9.0)]
    before = histories_before(requests, [stored, stored, CustomerHistory.empty()], 10)
    assert before[0].transaction_id == ["a"]  # "b" is the transaction itself: a retry
    assert before[1].transaction_id == ["a", "b"]  # ... then appended in the batch
    assert before[2].transaction_id == []
    assert without_transaction(stored, "zzz") is stored
    bounded = histories_before(requests, [stored, stored, CustomerHistory.empty()], 1)
    assert [h.transaction_id for h in bounded] == [["a"], ["b"], []]  # the newest one


@pytest.fixture(scope="module")
def loaded(serving_model) -> LoadedModel:
    return LoadedModel(serving_model.booster, serving_model.card)


def test_scorer_in_batch_semantics_and_appends(loaded, main_store, serving_model):
    settings = load_settings(main_store.config)
    client = redis_client(settings.redis.url, 1.0, serving=True)
    histories = RedisHistories(client, main_store.project)
    scorer = Scorer(loaded, histories, retry_after_s=0.5)  # appends inline
    t0 = to_epoch_us(datetime(2018, 5, 7, 12))
    customer = "functions-test-customer"
    txs = [Transaction("f2", t0 + 10, customer, "1", 30.0),
           Transaction("f1", t0, customer, "1", 10.0)]
    results = scorer.score(txs, ["r1", "r1"])
    assert [r.transaction.transaction_id for r in results] == ["f2", "f1"]
    assert {r.customer_freshness for r in results} == {"NOT_FOUND"}
    read = histories.read([OnlineRequest("f3", t0 + 20, customer, "1", 1.0)])
    assert read.customers[0].transaction_id == ["f1", "f2"]
    # Scored again later: the stored history is read and the batch appended once.
    again = scorer.score([Transaction("f3", t0 + 20, customer, "1", 50.0)])
    assert again[0].customer_freshness == "PRESENT"
    assert histories.read([OnlineRequest("f4", t0 + 30, customer, "1", 1.0)]).customers[0] \
        .transaction_id == ["f1", "f2", "f3"]
    client.close()


def test_scorer_degrades_then_backs_off(loaded):
    dead = redis_client(f"redis://127.0.0.1:{free_port()}/0", 0.02, serving=True)
    now = [100.0]
    scorer = Scorer(loaded, RedisHistories(dead, "nowhere"), retry_after_s=0.5,
                    clock=lambda: now[0])
    tx = Transaction("d1", to_epoch_us(datetime(2018, 5, 7)), "c", "t", 12.0)
    first = scorer.score([tx])[0]
    assert first.degraded and first.customer_freshness == DEFAULT == first.terminal_freshness
    prepared = scorer.prepare([tx])
    assert scorer.read(prepared) is None and prepared.reason == "backoff"
    now[0] += 1.0
    prepared = scorer.prepare([tx])
    assert scorer.read(prepared) is None and prepared.reason == "unreachable"
    assert scorer.appender.pending == 1  # kept for when the store answers


def test_appender_keeps_failed_appends_until_the_store_answers(main_store):
    settings = load_settings(main_store.config)
    dead = redis_client(f"redis://127.0.0.1:{free_port()}/0", 0.05, serving=True)
    appender = Appender(RedisHistories(dead, main_store.project), model_name="fraud",
                        retry_after_s=0.5, threaded=False)
    t0 = to_epoch_us(datetime(2018, 5, 7, 13))
    requests = [OnlineRequest("p1", t0, "appender-customer", "1", 3.0),
                OnlineRequest("p2", t0 + 1, "appender-customer", "1", 4.0)]
    appender.submit(requests[:1], None)
    appender.submit(requests[1:], None)
    assert appender.pending_events({"appender-customer"}) == {
        "appender-customer": [(t0, 3.0, "p1"), (t0 + 1, 4.0, "p2")]
    }
    assert appender.drain() is False
    assert appender.pending == 2
    live = redis_client(settings.redis.url, 1.0, serving=True)
    appender.histories = RedisHistories(live, main_store.project)
    assert appender.drain() is True
    assert appender.pending == 0 and appender.pending_events({"appender-customer"}) == {}
    stored = RedisHistories(live, main_store.project).read(
        [OnlineRequest("p3", t0 + 2, "appender-customer", "1", 1.0)]
    )
    assert stored.customers[0].transaction_id == ["p1", "p2"]
    live.close()
    dead.close()
