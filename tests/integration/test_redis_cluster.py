"""The online store on a real Redis Cluster: 3 primaries, 3 replicas on 127.0.0.1
(:class:`bench.redis_cluster.LocalRedisCluster`, stopped by PID).

* parity: the same snapshots and appends give the same histories as single-node Redis, and
  Feast's own cluster client (``redis_type: redis_cluster``) reads what Vigil wrote;
* redirections: MOVED (a manual failover moves slots), ASK (a slot being migrated) and
  NOSCRIPT (scripts flushed) are followed without an error reaching the caller;
* failover: a primary SIGKILLed while appending: every append confirmed (``WAIT``) before the
  kill is there after its replica took over, and the unconfirmed ones stay queued and land
  once the cluster has a replica again; a model server keeps answering 200 throughout,
  degraded only while it must, and recovers by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import redis
import yaml

from bench.redis_cluster import LocalRedisCluster
from feature_store.config import StoreConfig
from feature_store.jobs import materialize
from feature_store.online import (
    FeastHistories,
    RedisHistories,
    delete_project_keys,
    redis_client,
)
from feature_store.online.connection import NotReplicatedError
from feature_store.store import open_store
from feature_store.transforms import OnlineRequest, online_requests
from inference.scoring import Appender
from vigil import contract as c
from vigil.settings import load_settings

pytestmark = pytest.mark.integration

V1 = "/v1/models/fraud:predict"


def until(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``predicate`` (a functional wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for: {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    """A cluster of its own, for a test that kills a node."""
    with LocalRedisCluster(tmp_path / "cluster") as running:
        yield running


def cluster_config(path: Path, home: Path, project: str, cluster: LocalRedisCluster,
                   **serving: object) -> Path:
    config: dict[str, object] = {
        "home": str(home),
        "redis": {"type": "redis_cluster", "cluster_nodes": cluster.nodes},
        "features": {"project": project},
    }
    if serving:
        config["serving"] = serving
    path.write_text(yaml.safe_dump(config))
    return path


def same_reads(a, b) -> None:  # type: ignore[no-untyped-def]
    assert a.customer_status == b.customer_status
    assert a.terminal_status == b.terminal_status
    for x, y in zip(a.customers, b.customers, strict=True):
        assert x.time_us.tolist() == y.time_us.tolist()
        assert x.amount.tolist() == y.amount.tolist()
        assert x.transaction_id == y.transaction_id
    for x, y in zip(a.terminals, b.terminals, strict=True):
        assert x.available_us.tolist() == y.available_us.tolist()
        assert x.fraud.tolist() == y.fraud.tolist()


def test_parity_with_single_node_redis(serving_model, online_store, cluster, tmp_path):
    single = online_store()  # materialized into the shared single-node Redis
    config = StoreConfig.from_settings(load_settings(cluster_config(
        tmp_path / "vigil.yaml", serving_model.home, f"{single.project}_c", cluster)))
    result = materialize(config)
    assert result.backend == "redis" and result.customers > 0 and result.terminals > 0
    # the keys are spread over every primary
    for port in cluster.primaries():
        assert cluster.client(port).dbsize() > 0, f"primary {port} holds no key"

    one = RedisHistories(redis.Redis.from_url(single.redis_url, socket_timeout=10),
                         single.project)
    client = redis_client(config.redis_url, 10.0)
    many = RedisHistories(client, config.project)
    live = serving_model.live
    requests = online_requests(live)
    assert len(requests) > 100
    same_reads(one.read(requests), many.read(requests))

    # near-real-time appends, in batches as the server sends them, then read back
    for start in range(0, len(requests), 40):
        batch = requests[start : start + 40]
        one.append(batch)
        many.append(batch)
    after_one, after_many = one.read(requests), many.read(requests)
    same_reads(after_one, after_many)
    assert all(r.transaction_id in h.transaction_id
               for r, h in zip(requests, after_many.customers, strict=True))

    # Feast's own cluster client reads what Vigil wrote, in Feast's layout
    feast = FeastHistories(open_store(config, online="redis"))
    some = requests[:60]
    same_reads(feast.read(some), many.read(some))

    # the one cleanup of a project's keys reaches every primary
    def stored() -> int:
        return sum(len(list(cluster.client(port).scan_iter(match=f"*{config.project}",
                                                           count=1000)))
                   for port in cluster.primaries())

    on_primaries = stored()
    assert on_primaries >= result.customers + result.terminals
    assert delete_project_keys(client, config.project) == on_primaries
    assert stored() == 0
    client.close()


def test_redirections_are_followed(cluster):
    client = redis_client(cluster.url, 5.0)
    histories = RedisHistories(client, "redirect_test", append_replicas=1)
    t0 = 1_530_000_000_000_000
    requests = [OnlineRequest(f"tx-{i}", t0 + i * 1_000_000, f"customer-{i % 13}", str(i % 7),
                              float(i)) for i in range(30)]
    histories.append(requests[:10])

    # NOSCRIPT: every node forgets its scripts; the next append loads them again
    for port in cluster.alive():
        cluster.client(port).script_flush()
    histories.append(requests[10:20])
    assert histories.cluster is not None
    assert histories.cluster.redirected["NOSCRIPT"] > 0

    # MOVED: a replica takes over its primary's slots (manual failover); the client's slot
    # map is stale until a MOVED reply makes it read the map again
    key = histories.customer_key(requests[0].customer_id)
    old = cluster.primary_of(key)
    replica = cluster.replica_of(old)
    cluster.client(replica).execute_command("CLUSTER", "FAILOVER")
    until(lambda: cluster.primary_of(key) == replica, "manual failover")
    cluster.wait_ready()
    histories.append(requests[20:30])
    assert histories.cluster.redirected["MOVED"] > 0
    read = histories.read(requests)
    assert all(r.transaction_id in h.transaction_id
               for r, h in zip(requests, read.customers, strict=True))

    # ASK: a slot being migrated; a key not yet on the source is asked of the target
    fresh = OnlineRequest("ask-1", requests[0].time_us, "customer-ask", "1", 10.0)
    key = histories.customer_key(fresh.customer_id)
    slot = int(cluster.client(cluster.alive()[0]).execute_command("CLUSTER", "KEYSLOT", key))
    source = cluster.primary_of(key)
    target = next(p for p in cluster.primaries() if p != source)
    source_id = cluster.client(source).execute_command("CLUSTER", "MYID")
    target_id = cluster.client(target).execute_command("CLUSTER", "MYID")
    cluster.client(target).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    cluster.client(source).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    try:
        histories.append([fresh])
        assert histories.cluster.redirected["ASK"] > 0
        on_target = cluster.client(target).pipeline(transaction=False)
        on_target.execute_command("ASKING")
        on_target.exists(key)
        assert on_target.execute()[1] == 1  # written on the target, after ASKING
        with pytest.raises(redis.exceptions.AskError):  # not on the source: it says ASK
            cluster.client(source).exists(key)
        assert histories.read([fresh]).customers[0].transaction_id == ["ask-1"]
    finally:
        for port in (target, source):
            cluster.client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    cluster.wait_ready()

    def migrated() -> bool:
        try:
            return histories.read([fresh]).customers[0].transaction_id == ["ask-1"]
        except redis.exceptions.ClusterError:  # the new owner not yet known to every node
            return False

    until(migrated, "the migrated key read from its new primary")
    client.close()


def test_no_confirmed_append_is_lost_across_a_failover(serving_model, fresh_cluster):
    cluster = fresh_cluster
    client = redis_client(cluster.url, 2.0)
    histories = RedisHistories(client, "failover_test", append_replicas=1, append_wait_ms=200)
    appender = Appender(histories, model_name="cluster-test", retry_after_s=0.05,
                        threaded=False)
    live = serving_model.live
    requests = online_requests(live)
    victim = cluster.primary_of(histories.customer_key(requests[0].customer_id))
    replica = cluster.replica_of(victim)
    on_victim = [r for r in requests
                 if cluster.primary_of(histories.customer_key(r.customer_id)) == victim]
    assert len(on_victim) >= 20

    # confirmed: written and acknowledged by the replica
    confirmed = requests[: len(requests) // 2]
    for start in range(0, len(confirmed), 25):
        appender.submit(confirmed[start : start + 25], None)
        assert appender.drain(), "an append failed on a healthy cluster"

    # the replica stalls: appends reach the primary but are not confirmed, so they stay queued
    pending = [r for r in on_victim if r not in confirmed][:10]
    cluster.pause(replica)
    try:
        appender.submit(pending, None)
        assert not appender.drain(), "WAIT confirmed an append the replica cannot have seen"
        assert appender.pending == len(pending)
    finally:
        # the primary dies (no goodbye); its replica wakes up and takes over
        cluster.kill(victim)
        cluster.resume(replica)
    until(lambda: cluster.primary_of(histories.customer_key(on_victim[0].customer_id))
          == replica, "the replica takes over the killed primary's slots")

    def present(ids: list[OnlineRequest]) -> bool:
        try:
            read = histories.read(ids)
        except redis.RedisError:
            return False
        return all(r.transaction_id in h.transaction_id
                   for r, h in zip(ids, read.customers, strict=True))

    until(lambda: present(confirmed), "the confirmed appends read back after the failover")
    # the new primary has no replica yet: appends to its slots cannot be confirmed ...
    with pytest.raises(NotReplicatedError):
        histories.append(pending[:1])
    # ... until the killed node comes back (it rejoins as the new primary's replica)
    cluster.start_node(victim)
    cluster.wait_ready()
    until(appender.drain, "the queued appends confirmed once a replica is back")
    assert appender.pending == 0
    assert present(confirmed + pending)
    client.close()


def test_serving_keeps_answering_while_a_primary_fails_over(
    serving_model, fresh_cluster, server_factory, tx_instance, tmp_path
):
    cluster = fresh_cluster
    project = "serving_failover"
    config_path = cluster_config(tmp_path / "vigil.yaml", serving_model.home, project, cluster,
                                 retry_after_s=0.2)
    config = StoreConfig.from_settings(load_settings(config_path))
    materialize(config)
    server = server_factory(config=config_path, extra_args=["--log-root", str(tmp_path / "log")])
    live = serving_model.live
    rows = [row for _, row in live.iterrows()]
    answers: list[dict] = []
    scored: list[OnlineRequest] = []

    def score(http: httpx.Client, i: int) -> dict:
        row = rows[i % len(rows)]
        response = http.post(V1, json={"instances": [tx_instance(row)]})
        assert response.status_code == 200, response.text
        answer = response.json()
        answers.append(answer)
        scored.append(OnlineRequest(str(row[c.TRANSACTION_ID]),
                                    int(pd.Timestamp(row[c.TX_DATETIME]).value // 1000),
                                    str(row[c.CUSTOMER_ID]), str(row[c.TERMINAL_ID]),
                                    float(row[c.TX_AMOUNT])))
        return answer

    histories = RedisHistories(redis_client(cluster.url, 5.0), project)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        i = 0
        for _ in range(20):
            assert score(http, i)["degraded"] is False
            i += 1
        victim = cluster.primaries()[0]
        cluster.kill(victim)
        killed_at = len(answers)
        # keep scoring through the failover: every request answered, 200
        deadline = time.monotonic() + 60
        while True:
            score(http, i)
            i += 1
            recovered = len(answers) - killed_at > 5 and all(
                not a["degraded"] for a in answers[-5:])
            if recovered and cluster.ready(synced=False):
                break
            assert time.monotonic() < deadline, "serving did not recover after the failover"
            time.sleep(0.02)
        during = answers[killed_at:]
        assert all(a["predictions"][0]["decision"] in ("fraud", "legit") for a in during)
        # the kill was felt: reads that needed the dead primary were answered degraded
        assert any(a["degraded"] for a in during)
        # the killed node comes back as a replica: every scored transaction reaches its history
        cluster.start_node(victim)
        cluster.wait_ready()
        for _ in range(10):
            assert score(http, i)["degraded"] is False
            i += 1

    def all_appended() -> bool:
        try:
            read = histories.read(scored)
        except redis.RedisError:
            return False
        return all(r.transaction_id in h.transaction_id
                   for r, h in zip(scored, read.customers, strict=True))

    until(all_appended, "every scored transaction appended after the failover")
    histories.client.close()
