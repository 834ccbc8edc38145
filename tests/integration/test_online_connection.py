"""The online read path's own connection (DirectConnection), against real Redis."""

from __future__ import annotations

import gc
import uuid

import pytest
import redis

from feature_store.online import RedisHistories
from feature_store.transforms import OnlineRequest

pytestmark = pytest.mark.integration


def test_a_dropped_connection_fails_one_read_and_the_next_reconnects() -> None:
    client = redis.Redis(host="127.0.0.1", port=6379)
    histories = RedisHistories(client, f"test_conn_{uuid.uuid4().hex[:8]}")
    request = OnlineRequest("1", 1_530_000_000_000_000, "c", "t", 1.0)
    assert histories.read([request]).customer_status == ["NOT_FOUND"]
    (mine,) = histories._direct.exchange([("CLIENT", "ID")])
    redis.Redis(host="127.0.0.1", port=6379).client_kill_filter(_id=mine)
    with pytest.raises(redis.ConnectionError):
        histories.read([request])
    assert histories.read([request]).terminal_status == ["NOT_FOUND"]
    (again,) = histories._direct.exchange([("CLIENT", "ID")])
    assert again != mine
    client.close()


def test_histories_give_their_connections_back_to_the_pool() -> None:
    client = redis.Redis(host="127.0.0.1", port=6379)
    pool = client.connection_pool
    request = OnlineRequest("1", 1_530_000_000_000_000, "c", "t", 1.0)
    for _ in range(20):
        RedisHistories(client, "test_conn_pool").read([request])
    gc.collect()
    assert not pool._in_use_connections
    assert len(pool._available_connections) == 1  # the same connection, taken 20 times
    client.close()
