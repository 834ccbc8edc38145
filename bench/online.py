"""Online feature store at the handbook's size, against real Redis.

* materialization: Vigil's writer (Feast's Redis layout, pipelined compare-and-set) vs.
  Feast's own ``write_to_online_store`` for the same snapshot rows, in rows/s;
* one transaction's online features: Vigil's read (one pipelined round trip) + the shared
  transform vs. Feast's ``get_online_features`` + the same transform, p50/p99.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import handbook_data, percentiles
from feature_store import offline
from feature_store.config import StoreConfig
from feature_store.jobs import MATERIALIZE_TIMEOUT_S
from feature_store.online import FeastHistories, RedisHistories, delete_project_keys, redis_client
from feature_store.store import open_store
from feature_store.transforms import OnlineRequest, online_features, online_requests
from vigil import contract as c
from vigil.data.ingest import read_transactions
from vigil.process import tune_garbage_collector
from vigil.settings import Settings

READS = 3_000
#: Loads of the same snapshot per writer (the first into empty keys); the median is reported.
LOADS = 5
TARGET_ROWS_PER_S = 50_000
TARGET_P99_MS = 1.0


def _latencies(
    store: RedisHistories | FeastHistories, requests: list[OnlineRequest]
) -> list[float]:
    samples = []
    for req in requests:
        t0 = time.perf_counter()
        read = store.read([req])
        online_features([req], read.customers, read.terminals)
        samples.append(time.perf_counter() - t0)
    return samples


def main() -> dict[str, Any]:
    tx = read_transactions(handbook_data()).frame
    cutoff = pd.Timestamp(tx[c.TX_DATETIME].max())
    customers = offline.customer_snapshot(tx, cutoff)
    terminals = offline.terminal_snapshot(tx, cutoff)
    rows = len(customers) + len(terminals)
    project = f"bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as home:
        settings = Settings.model_validate({"home": Path(home), "features": {"project": project}})
        config = StoreConfig.from_settings(settings)
        client = redis_client(config.redis_url, MATERIALIZE_TIMEOUT_S)
        ours = RedisHistories(client, project)
        feast = FeastHistories(open_store(config, online="redis"))
        try:
            ours_s, feast_s = [], []
            for _ in range(LOADS):
                t0 = time.perf_counter()
                ours.write_customer_snapshot(customers)
                ours.write_terminal_snapshot(terminals)
                ours_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                feast.write_customer_snapshot(customers)
                feast.write_terminal_snapshot(terminals)
                feast_s.append(time.perf_counter() - t0)
            ours_rate = rows / float(np.median(ours_s))
            feast_rate = rows / float(np.median(feast_s))

            requests = online_requests(
                tx[tx[c.TX_DATETIME] > cutoff - pd.Timedelta(days=6)].sample(READS, random_state=0)
            )
            _latencies(ours, requests[:200])  # warm-up: connections, caches
            _latencies(feast, requests[:200])
            tune_garbage_collector()  # as the model server runs: both paths alike
            ours_lat = percentiles(_latencies(ours, requests))
            feast_lat = percentiles(_latencies(feast, requests[: READS // 3]))
        finally:
            delete_project_keys(client, project)
    summary = [
        {
            "what": f"materialize {rows:,} entity rows into Redis (rows/s)",
            "stock": round(feast_rate),
            "vigil": round(ours_rate),
            "ratio": round(ours_rate / feast_rate, 1),
            "target": f">= {TARGET_ROWS_PER_S:,}",
            "met": ours_rate >= TARGET_ROWS_PER_S,
        },
        {
            "what": "online features, one transaction, p50 (ms)",
            "stock": feast_lat["p50_ms"],
            "vigil": ours_lat["p50_ms"],
            "ratio": round(feast_lat["p50_ms"] / ours_lat["p50_ms"], 1),
        },
        {
            "what": "online features, one transaction, p99 (ms)",
            "stock": feast_lat["p99_ms"],
            "vigil": ours_lat["p99_ms"],
            "ratio": round(feast_lat["p99_ms"] / ours_lat["p99_ms"], 1),
            "target": f"<= {TARGET_P99_MS} ms",
            "met": ours_lat["p99_ms"] <= TARGET_P99_MS,
        },
    ]
    return {
        "rows": {"customers": len(customers), "terminals": len(terminals)},
        "materialize_seconds": {"vigil": ours_s, "feast": feast_s},
        "read_latency": {"vigil": ours_lat, "feast": feast_lat},
        "summary": summary,
        "targets_met": all(r.get("met", True) for r in summary),
    }
