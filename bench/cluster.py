"""The online store on Redis Cluster vs. one Redis server, side by side, at the handbook's size.

One run, on this machine: the shared single-node Redis (127.0.0.1:6379) and a real
3-primary/3-replica cluster started here (:class:`bench.redis_cluster.LocalRedisCluster`, on
the same cores: this measures the cluster path's overhead, not a cluster's capacity):

* materialization of the same snapshot rows (Vigil's writer), rows/s, median of ``LOADS``;
* online features of one transaction (read + the shared transform) and of a batch of
  ``BATCH`` transactions (a micro-batch of the model server), p50/p99;
* near-real-time appends of ``BATCH`` transactions: one server without ``WAIT`` (the
  default there) vs. the cluster with ``WAIT 1`` (its default) and without;
* memory: ``MEMORY USAGE`` of real customer and terminal keys, fitted as fixed + per-entry
  bytes, and the primaries' ``used_memory`` growth per key (what docs/scaling.md uses).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bench.common import handbook_data, percentiles
from bench.redis_cluster import LocalRedisCluster
from feature_store import names as n
from feature_store import offline
from feature_store.jobs import MATERIALIZE_TIMEOUT_S
from feature_store.online import RedisHistories, delete_project_keys, redis_client
from feature_store.online.limits import newest_rows
from feature_store.transforms import OnlineRequest, online_features, online_requests
from vigil import contract as c
from vigil.data.ingest import read_transactions
from vigil.process import tune_garbage_collector

SINGLE_URL = "redis://127.0.0.1:6379/0"
LOADS = 3
READS = 3_000
BATCH = 64
BATCH_READS = 500
APPENDS = 300
MEMORY_SAMPLE = 2_000


def _reads(store: RedisHistories, batches: list[list[OnlineRequest]]) -> list[float]:
    samples = []
    for batch in batches:
        t0 = time.perf_counter()
        read = store.read(batch)
        online_features(batch, read.customers, read.terminals)
        samples.append(time.perf_counter() - t0)
    return samples


def _appends(store: RedisHistories, batches: list[list[OnlineRequest]]) -> list[float]:
    samples = []
    for batch in batches:
        t0 = time.perf_counter()
        store.append(batch)
        samples.append(time.perf_counter() - t0)
    return samples


def _fit(sizes: list[int], entries: list[int]) -> dict[str, float]:
    """bytes = fixed + per_entry * entries, least squares."""
    per_entry, fixed = np.polyfit(np.asarray(entries, float), np.asarray(sizes, float), 1)
    predicted = fixed + per_entry * np.asarray(entries, float)
    error = np.abs(predicted - np.asarray(sizes, float)) / np.asarray(sizes, float)
    return {"fixed_bytes": round(float(fixed), 1), "per_entry_bytes": round(float(per_entry), 2),
            "keys": len(sizes), "mean_entries": round(float(np.mean(entries)), 1),
            "mean_bytes": round(float(np.mean(sizes)), 1),
            "max_relative_error": round(float(error.max()), 3)}


def _memory(cluster: LocalRedisCluster, store: RedisHistories, customers: pa.Table,
            terminals: pa.Table) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for what, table, id_col, list_col, key in (
        ("customer", customers, n.CUSTOMER_ID, n.TX_TIMESTAMPS_US, store.customer_key),
        ("terminal", terminals, n.TERMINAL_ID, n.LABEL_AVAILABLE_US, store.terminal_key),
    ):
        rows = rng.choice(table.num_rows, min(MEMORY_SAMPLE, table.num_rows), replace=False)
        ids = table.column(id_col).take(pa.array(rows)).to_pylist()
        lengths = pc.list_value_length(table.column(list_col)).take(pa.array(rows))
        keys = [key(str(i)) for i in ids]
        by_port: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            by_port.setdefault(cluster.primary_of(k), []).append(i)
        sizes = [0] * len(keys)
        for port, idx in by_port.items():
            pipe = cluster.client(port, 30).pipeline(transaction=False)
            for i in idx:
                pipe.execute_command("MEMORY", "USAGE", keys[i], "SAMPLES", "0")
            for i, size in zip(idx, pipe.execute(), strict=True):
                sizes[i] = int(size)
        out[what] = _fit(sizes, [int(x) for x in lengths.to_pylist()])
    return out


def _used_memory(cluster: LocalRedisCluster) -> int:
    return sum(int(cluster.info(p, "memory")["used_memory"]) for p in cluster.primaries())


def _keys(cluster: LocalRedisCluster) -> int:
    return sum(int(cluster.client(p).dbsize()) for p in cluster.primaries())


def main() -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    tx = read_transactions(handbook_data()).frame
    cutoff = pd.Timestamp(tx[c.TX_DATETIME].max()) - pd.Timedelta(days=7)
    customers = offline.customer_snapshot(tx[tx[c.TX_DATETIME] <= cutoff], cutoff)
    terminals = offline.terminal_snapshot(tx[tx[c.TX_DATETIME] <= cutoff], cutoff)
    rows = len(customers) + len(terminals)
    live = tx[(tx[c.TX_DATETIME] > cutoff)].sort_values([c.TX_DATETIME, c.TRANSACTION_ID])
    requests = online_requests(live.sample(READS, random_state=0))
    batches = [online_requests(live.sample(BATCH, random_state=s)) for s in range(BATCH_READS)]
    appends = online_requests(live.head(APPENDS * BATCH))
    append_batches = [appends[i : i + BATCH] for i in range(0, len(appends), BATCH)]
    project = f"bench_{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, LocalRedisCluster(Path(tmp)) as cluster:
        single_client = redis_client(SINGLE_URL, MATERIALIZE_TIMEOUT_S)
        cluster_client = redis_client(cluster.url, MATERIALIZE_TIMEOUT_S)
        single = RedisHistories(single_client, project)
        clustered = RedisHistories(cluster_client, project)
        waited = RedisHistories(redis_client(cluster.url, MATERIALIZE_TIMEOUT_S), project,
                                append_replicas=1)
        try:
            before, keys_before = _used_memory(cluster), _keys(cluster)
            load_s: dict[str, list[float]] = {"single": [], "cluster": []}
            for _ in range(LOADS):
                for name, store in (("single", single), ("cluster", clustered)):
                    t0 = time.perf_counter()
                    store.write_customer_snapshot(customers)
                    store.write_terminal_snapshot(terminals)
                    load_s[name].append(time.perf_counter() - t0)
            grown = _used_memory(cluster) - before
            keys = _keys(cluster) - keys_before
            bounded_c = newest_rows(customers,
                                    [n.TX_TIMESTAMPS_US, n.TX_AMOUNTS, n.TX_IDS],
                                    single.limits.max_entries)
            bounded_t = newest_rows(terminals,
                                    [n.LABEL_AVAILABLE_US, n.LABEL_FRAUD],
                                    single.limits.max_entries)
            memory = _memory(cluster, clustered, bounded_c, bounded_t)
            memory["primaries_used_memory_growth_bytes"] = grown
            memory["keys"] = keys
            memory["used_memory_per_key_bytes"] = round(grown / keys, 1)
            memory["customer_entries_total"] = int(pc.sum(
                pc.list_value_length(bounded_c.column(n.TX_TIMESTAMPS_US))).as_py())
            memory["terminal_entries_total"] = int(pc.sum(
                pc.list_value_length(bounded_t.column(n.LABEL_AVAILABLE_US))).as_py())

            one = [[r] for r in requests]
            for store in (single, clustered):  # warm-up: connections, caches
                _reads(store, one[:200])
                _reads(store, batches[:20])
            tune_garbage_collector()
            lat: dict[str, dict[str, list[float]]] = {"single": {}, "cluster": {}}
            # interleaved in blocks, so drifting load hits both alike
            for block in range(0, len(one), 500):
                for name, store in (("single", single), ("cluster", clustered)):
                    lat[name].setdefault("one", []).extend(_reads(store, one[block:block + 500]))
            for block in range(0, len(batches), 100):
                for name, store in (("single", single), ("cluster", clustered)):
                    lat[name].setdefault("batch", []).extend(
                        _reads(store, batches[block:block + 100]))
            appended: dict[str, list[float]] = {"single": [], "cluster": [], "cluster_wait1": []}
            for block in range(0, len(append_batches), 50):
                part = append_batches[block:block + 50]
                appended["single"] += _appends(single, part)
                appended["cluster"] += _appends(clustered, part)
                appended["cluster_wait1"] += _appends(waited, part)
        finally:
            delete_project_keys(single_client, project)
            single_client.close()
            cluster_client.close()
    rate = {k: rows / float(np.median(v)) for k, v in load_s.items()}
    reads = {k: {kind: percentiles(v) for kind, v in d.items()} for k, d in lat.items()}
    writes = {k: percentiles(v) for k, v in appended.items()}
    load_end = os.getloadavg()[0]
    summary = [
        {"what": f"materialize {rows:,} entity rows (rows/s)", "stock": round(rate["single"]),
         "vigil": round(rate["cluster"]), "ratio": round(rate["cluster"] / rate["single"], 2)},
    ]
    for kind, label in (("one", "one transaction"), ("batch", f"batch of {BATCH}")):
        for p in ("p50_ms", "p99_ms"):
            s, cl = reads["single"][kind][p], reads["cluster"][kind][p]
            summary.append({"what": f"online features, {label}, {p[:3]} (ms)", "stock": s,
                            "vigil": cl, "ratio": round(cl / s, 2)})
    for name, label in (("cluster", "no WAIT"), ("cluster_wait1", "cluster with WAIT 1")):
        s, cl = writes["single"]["p99_ms"], writes[name]["p99_ms"]
        summary.append({"what": f"append {BATCH} transactions, p99 (ms), {label}", "stock": s,
                        "vigil": cl, "ratio": round(cl / s, 2)})
    result.update({
        "setup": "single: redis-server 127.0.0.1:6379 (no replica); cluster: 3 primaries + 3 "
                 "replicas (redis-server 7.0, cluster-enabled) on the same 2 cores",
        "rows": {"customers": len(customers), "terminals": len(terminals)},
        "data": {"transactions": len(tx), "days": int(tx[c.TX_DATETIME].dt.normalize().nunique()),
                 "customers": int(tx[c.CUSTOMER_ID].nunique()),
                 "terminals": int(tx[c.TERMINAL_ID].nunique()),
                 "snapshot_arrow_bytes": {"customers": customers.nbytes,
                                          "terminals": terminals.nbytes}},
        "materialize_seconds": load_s,
        "read_latency": reads,
        "append_latency": writes,
        "memory": memory,
        "loadavg_1m": {"start": round(load_start, 2), "end": round(load_end, 2)},
        "columns": {"stock": "single node", "vigil": "cluster 3+3"},
        "summary": summary,
    })
    return result
