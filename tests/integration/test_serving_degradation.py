"""Degradation against a real redis-server that the test pauses, stops and restarts.

Redis slower than the 20 ms budget (SIGSTOP) or unreachable (stopped): the server still answers
200, scores with the documented default features, says ``degraded: true``, counts it, and
recovers by itself when Redis is back; transactions scored meanwhile reach the customer
histories once Redis answers again. A server started before its Redis becomes ready by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import numpy as np
import pandas as pd
import pytest
import redis

from feature_store.config import StoreConfig
from feature_store.jobs import materialize
from feature_store.online import RedisHistories
from feature_store.transforms import (
    CustomerHistory,
    OnlineRequest,
    TerminalHistory,
    online_features,
)
from inference.client import health, wait_ready
from vigil import contract as c
from vigil.settings import load_settings

pytestmark = pytest.mark.integration

V1 = "/v1/models/fraud:predict"
WAIT_S = 30.0


def until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``predicate`` (a functional wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for: {what}"
        time.sleep(0.1)


def metric(text: str, name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_degrades_and_recovers_when_redis_hangs_or_dies(
    serving_model, online_store, redis_process, server_factory, tx_instance, read_log, tmp_path,
    feature_names,
):
    rp = redis_process()
    store = online_store(redis_url=rp.url)
    log_root = tmp_path / "log"
    server = server_factory(config=store.config, extra_args=["--log-root", str(log_root)])
    live = serving_model.live
    rows = iter(live.iterrows())

    every_degraded: list[str] = []

    def score(http: httpx.Client) -> dict:
        _, row = next(rows)
        response = http.post(V1, json={"instances": [tx_instance(row)]})
        assert response.status_code == 200, response.text
        answer = response.json()
        if answer["degraded"]:
            every_degraded.append(answer["predictions"][0]["transaction_id"])
        return answer

    by_id = live.set_index(live[c.TRANSACTION_ID].astype(str))
    client = redis.Redis.from_url(rp.url, socket_timeout=5)
    histories = RedisHistories(client, store.project)

    def appended(ids: list[str]) -> bool:
        """Whether these transactions are in their customers' histories in Redis."""
        requests = [
            OnlineRequest(t, int(by_id.loc[t, c.TX_DATETIME].value // 1000),
                          str(by_id.loc[t, c.CUSTOMER_ID]), str(by_id.loc[t, c.TERMINAL_ID]),
                          float(by_id.loc[t, c.TX_AMOUNT]))
            for t in ids
        ]
        try:
            read = histories.read(requests)
        except redis.RedisError:
            return False
        return all(r.transaction_id in h.transaction_id
                   for r, h in zip(requests, read.customers, strict=True))

    degraded_ids: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answer = score(http)
        assert answer["degraded"] is False
        assert answer["predictions"][0]["freshness"]["customer"] == "PRESENT"

        # Redis hangs: every read times out after the budget.
        rp.pause()
        try:
            for _ in range(5):
                answer = score(http)
                assert answer["degraded"] is True
                prediction = answer["predictions"][0]
                assert prediction["degraded"] is True
                assert prediction["freshness"] == {"customer": "DEFAULT", "terminal": "DEFAULT"}
                degraded_ids.append(prediction["transaction_id"])
        finally:
            rp.resume()
        until(lambda: score(http)["degraded"] is False, "recovery after Redis resumed")
        # What was scored while Redis hung reaches the customer histories once it answers.
        until(lambda: appended(degraded_ids), "appends of what was scored while Redis hung")

        # Redis dies: connection refused.
        rp.stop()
        while_down: list[str] = []
        for _ in range(3):
            answer = score(http)
            assert answer["degraded"] is True
            while_down.append(answer["predictions"][0]["transaction_id"])
        degraded_ids += while_down
        metrics = http.get("/metrics").text
        assert metric(metrics, "vigil_serving_degraded_transactions_total", reason="timeout") >= 1
        assert metric(metrics, "vigil_serving_degraded_transactions_total",
                      reason="unreachable") >= 1
        assert metric(metrics, "vigil_serving_requests_total", outcome="degraded",
                      status_code="200") >= 8

        # Redis comes back (empty: no persistence) and is loaded again.
        rp.start()
        materialize(StoreConfig.from_settings(load_settings(store.config)))
        until(lambda: score(http)["degraded"] is False, "recovery after Redis restarted")
        answer = score(http)
        assert answer["predictions"][0]["freshness"]["terminal"] == "PRESENT"
        assert http.get("/v2/health/ready").status_code == 200

    # ... and so does what was scored while it was down (restarted empty, then reloaded).
    until(lambda: appended(while_down), "appends of what was scored while Redis was down")
    client.close()

    # Degraded rows were scored with the documented defaults: no history at all.
    assert server.stop() == 0
    log = read_log(log_root)
    degraded = log[log["degraded"]]
    assert set(degraded_ids) <= set(every_degraded)
    assert sorted(degraded[c.TRANSACTION_ID]) == sorted(every_degraded)
    assert set(degraded["degraded_reason"]) <= {"timeout", "unreachable", "backoff"}
    requests = [
        OnlineRequest(r[c.TRANSACTION_ID], int(pd.Timestamp(r[c.TX_DATETIME]).value // 1000),
                      r[c.CUSTOMER_ID], r[c.TERMINAL_ID], r[c.TX_AMOUNT])
        for _, r in degraded.iterrows()
    ]
    defaults = online_features(requests, [CustomerHistory.empty()] * len(requests),
                               [TerminalHistory.empty()] * len(requests))
    for name in feature_names:
        np.testing.assert_allclose(degraded[name].to_numpy(np.float64),
                                   np.asarray(defaults[name], np.float64), err_msg=name)
    assert (degraded["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1).all()
    assert (degraded["TERMINAL_ID_RISK_7DAY_WINDOW"] == 0).all()
    expected = serving_model.booster.predict(degraded[feature_names].to_numpy(np.float64))
    np.testing.assert_allclose(degraded["score"].to_numpy(), expected, rtol=1e-12)


def test_becomes_ready_when_its_redis_starts(
    serving_model, online_store, redis_process, server_factory, tx_instance
):
    rp = redis_process()
    store = online_store(redis_url=rp.url, materialized=False)
    rp.stop()
    server = server_factory(config=store.config, wait=False)
    until(lambda: server.log_path.read_text().count("not reachable yet") > 0
          or server.process.poll() is not None, "the server waiting for Redis", 180)
    assert server.process.poll() is None, server.log_tail()
    until(lambda: health(server.url, "/v2/health/live") == 200, "liveness", 60)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/v2/health/ready").status_code == 503
        rp.start()
        materialize(StoreConfig.from_settings(load_settings(store.config)))
        wait_ready(server, 30)
        row = serving_model.live.iloc[5]
        response = http.post(V1, json={"instances": [tx_instance(row)]})
        assert response.status_code == 200
        assert response.json()["degraded"] is False
