"""The online read path's own connection (DirectConnection), against real Redis."""

from __future__ import annotations

import gc
import uuid

import pandas as pd
import pytest
import redis

from feature_store import names as n
from feature_store.online import RedisHistories, delete_project_keys
from feature_store.online.codec import KeyEncoder
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


def test_delete_project_keys_deletes_that_projects_keys_only() -> None:
    """Materialized snapshots (more keys than one DEL carries) are deleted, with the count;
    another project whose name ends with this one's, and a key merely ending with the name,
    stay."""
    project = f"test_del_{uuid.uuid4().hex[:8]}"
    other = f"x{project}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        customers = pd.DataFrame({
            n.CUSTOMER_ID: [str(i) for i in range(1_200)],
            n.TX_TIMESTAMPS_US: [[1_530_000_000_000_000]] * 1_200,
            n.TX_AMOUNTS: [[12.5]] * 1_200,
            n.TX_IDS: [[f"t{i}"] for i in range(1_200)],
            n.EVENT_TIMESTAMP: pd.Timestamp("2018-06-26", tz="UTC"),
        })
        for name in (project, other):
            assert RedisHistories(client, name).write_customer_snapshot(customers) == 1_200
            client.hset(KeyEncoder(n.TERMINAL_ID, name)("7"), b"f", b"1")  # a second join key
        lookalike = b"not an entity key " + project.encode()
        client.set(lookalike, b"1")
        assert delete_project_keys(client, project) == 1_201
        left = set(client.scan_iter(match=f"*{project}", count=1000)) - {lookalike}
        assert len(left) == 1_201 and all(k.endswith(other.encode()) for k in left)
        assert delete_project_keys(client, project) == 0
        assert delete_project_keys(client, other) == 1_201
        assert not list(client.scan_iter(match=f"*{other}", count=1000))
    finally:
        client.delete(b"not an entity key " + project.encode())
        delete_project_keys(client, project)
        delete_project_keys(client, other)
        client.close()
