"""Serving under closed-loop load on 127.0.0.1, features from real Redis: Vigil vs. the stock
pattern.

* **Vigil**: ``vigil serve fraud`` (one process, as in a pod): KServe's model API in Vigil's
  app on uvicorn, adaptive batching, one pipelined Redis read per batch, the shared
  transform, LightGBM on one thread, near-real-time appends off the response path,
  inference log, metrics.
* **Stock**: a plain ``kserve.Model`` whose ``predict`` calls Feast's ``get_online_features``
  for each transaction (KServe's Feast transformer sample), computes the same features with the
  same transform and calls the same booster; KServe's stock REST app (its routes, timing
  middleware, per-request access and latency logs) on uvicorn, bound to 127.0.0.1, no gRPC.
  It does not append to the histories.

Both serve the same registered model over the same online store: the handbook-size simulation
(5,000 customers, 10,000 terminals), histories materialized at the start of its last day into
the local Redis under a project of its own (deleted afterwards); requests are that day's
transactions, one per request, V1 protocol. For 1, 8 and 32 concurrent clients, a load
generator in a separate process (asyncio + uvloop, raw HTTP/1.1 keep-alive connections, one
request in flight per connection) runs ``WARMUP_S`` then ``DURATION_S`` seconds against each
server in turn; p50/p95/p99 are client-side latencies of the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from bench.common import DATA, handbook_data, percentiles, split_response

DURATION_S = 10.0
WARMUP_S = 2.0
CONCURRENCY = (1, 8, 32)
TARGET_P99_1_MS = 5.0
TARGET_RPS_32 = 800.0
TARGET_P99_32_MS = 50.0
HISTORY_DAYS = 45  # enough history before the cutoff for every window (30 + 7 days)


# ------------------------------------------------------------------------------- load generator


class _Connection(asyncio.Protocol):
    """One closed-loop client: send, wait for the whole response, record, send the next."""

    def __init__(self, requests: list[bytes], deadline: float, warm_until: float,
                 latencies: list[float], statuses: dict[int, int],
                 done: asyncio.Future[None]):
        self.requests = requests
        self.index = 0
        self.deadline = deadline
        self.warm_until = warm_until
        self.latencies = latencies
        self.statuses = statuses
        self.done = done
        self.buffer = b""
        self.sent_at = 0.0
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)  # uvloop's TCPTransport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        request = self.requests[self.index % len(self.requests)]
        self.index += 1
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (response := split_response(self.buffer)) is not None:
            status, self.buffer = response
            now = time.perf_counter()
            if self.sent_at >= self.warm_until:
                self.latencies.append(now - self.sent_at)
                self.statuses[status] = self.statuses.get(status, 0) + 1
            if now < self.deadline:
                self._send()
            else:
                assert self.transport is not None
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self.deadline:
            self.statuses[-1] = self.statuses.get(-1, 0) + 1  # dropped by the server
        if not self.done.done():
            self.done.set_result(None)


async def _load(host: str, port: int, requests: list[bytes], concurrency: int,
                duration_s: float, warmup_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    warm_until = start + warmup_s
    deadline = warm_until + duration_s
    dones = []
    for k in range(concurrency):
        done: asyncio.Future[None] = loop.create_future()
        dones.append(done)
        mine = requests[k::concurrency] or requests

        def protocol(mine: list[bytes] = mine, done: asyncio.Future[None] = done) -> _Connection:
            return _Connection(mine, deadline, warm_until, latencies, statuses, done)

        await loop.create_connection(protocol, host, port)
    await asyncio.wait_for(asyncio.gather(*dones), timeout=duration_s + warmup_s + 60)
    elapsed = time.perf_counter() - warm_until
    return {"latencies_s": latencies, "statuses": statuses, "seconds": elapsed}


def loadgen(host: str, port: int, path: str, bodies: list[str], concurrency: int,
            duration_s: float, warmup_s: float) -> dict[str, Any]:
    """Closed-loop load; returns percentiles, requests/s and status counts."""
    import uvloop

    requests = [
        (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
         f"Content-Length: {len(body.encode())}\r\n\r\n{body}").encode()
        for body in bodies
    ]
    result = uvloop.run(_load(host, port, requests, concurrency, duration_s, warmup_s))
    latencies = result["latencies_s"]
    statuses = result["statuses"]
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / result["seconds"], 1),
        "errors": sum(n for s, n in statuses.items() if s != 200),
        "statuses": {str(k): v for k, v in statuses.items()},
        **percentiles(latencies),
    }


def run_loadgen(url: str, path: str, bodies_file: Path, concurrency: int) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    load1 = os.getloadavg()[0]
    done = subprocess.run(
        [sys.executable, "-m", "bench.serving", "loadgen", host, port, path, str(bodies_file),
         str(concurrency), str(DURATION_S), str(WARMUP_S)],
        capture_output=True, text=True, check=False, timeout=DURATION_S + WARMUP_S + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed against {url}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["loadavg_1m_before"] = round(load1, 2)
    return result


# ------------------------------------------------------------------------------- stock server


def stock_server(config: str, port: int) -> None:
    """KServe's Feast sample pattern: a plain ``kserve.Model`` calling Feast per request."""
    sys.argv = sys.argv[:1]
    from datetime import datetime

    import numpy as np
    import uvicorn
    from kserve import Model, ModelRepository
    from kserve import logging as kserve_logging
    from kserve.model_server import app
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.rest.server import RESTServer

    from feature_store.config import StoreConfig
    from feature_store.online import FeastHistories
    from feature_store.store import open_store
    from feature_store.transforms import OnlineRequest, online_features
    from vigil import contract as c
    from vigil.registry import Registry
    from vigil.settings import load_settings

    settings = load_settings(config)
    loaded = Registry.from_settings(settings).load_model("fraud")
    store = open_store(StoreConfig.from_settings(settings), online="redis")
    epoch = datetime(1970, 1, 1)

    class StockFraudModel(Model):
        def load(self) -> bool:
            self.ready = True
            return True

        def predict(self, payload: Any, headers: Any = None,
                    response_headers: Any = None) -> dict[str, Any]:
            scores = []
            for item in payload["instances"]:
                moment = datetime.fromisoformat(item[c.TX_DATETIME]) - epoch
                request = OnlineRequest(
                    str(item.get(c.TRANSACTION_ID, "")),
                    (moment.days * 86_400 + moment.seconds) * 1_000_000 + moment.microseconds,
                    str(item[c.CUSTOMER_ID]), str(item[c.TERMINAL_ID]), float(item[c.TX_AMOUNT]),
                )
                read = FeastHistories(store).read([request])  # get_online_features
                features = online_features([request], read.customers, read.terminals)
                matrix = np.column_stack([features[n] for n in loaded.card.feature_names])
                scores.append(float(loaded.booster.predict(matrix)[0]))
            return {"predictions": scores}

    model = StockFraudModel("fraud")
    model.load()
    model.enable_latency_logging = True  # KServe's default: a log line per request
    repository = ModelRepository()
    repository.update(model)
    kserve_logging.configure_logging()
    # KServe's stock app (kserve.model_server:app with its routes, middleware and handlers),
    # served on 127.0.0.1: KServe's own server binds 0.0.0.0.
    rest = RESTServer("kserve.model_server:app", DataPlane(model_registry=repository), None,
                      port)
    rest.create_application()
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                  loop="uvloop")).run()


# ------------------------------------------------------------------------------- benchmark


def _prepare(home: Path, project: str) -> tuple[Path, list[str], dict[str, Any]]:
    """Data, model and online store; returns (config, request bodies, data description)."""
    import pandas as pd
    import yaml

    from feature_store.config import StoreConfig
    from feature_store.jobs import featurize, materialize
    from feature_store.names import FEATURE_SERVICE
    from feature_store.transforms import DEFAULT_SPEC
    from vigil import contract as c
    from vigil.data.ingest import read_transactions
    from vigil.registry import Registry
    from vigil.settings import load_settings
    from vigil.training import train_lightgbm

    tx = read_transactions(handbook_data()).frame
    last = pd.Timestamp(tx[c.TX_DATETIME].max()).normalize()
    cutoff = last  # histories as of the start of the last day; its transactions are traffic
    window = tx[tx[c.TX_DATETIME] > cutoff - pd.Timedelta(days=HISTORY_DAYS)].reset_index(
        drop=True
    )
    config = home / "vigil.yaml"
    config.write_text(yaml.safe_dump({"home": str(home), "features": {"project": project}}))
    settings = load_settings(config)
    store = StoreConfig.from_settings(settings)
    features, _ = featurize(window, None, store=store, cutoff=cutoff.to_pydatetime())
    train = features[(features[c.TX_DATETIME] <= cutoff)
                     & (features[c.TX_DATETIME] > cutoff - pd.Timedelta(days=7))]
    trained = train_lightgbm(train, num_boost_round=100, feature_names=DEFAULT_SPEC.features)
    Registry.from_settings(settings).register_model(
        trained.booster, name="fraud", threshold=0.5, feature_service=FEATURE_SERVICE,
        data_range=(cutoff.date() - timedelta(days=7), cutoff.date()),
        metrics={}, alias="champion",
    )
    materialize(store)
    traffic = window[window[c.TX_DATETIME] > cutoff].sort_values(c.TX_DATETIME)
    bodies = [
        json.dumps({"instances": [{
            c.TRANSACTION_ID: str(r[c.TRANSACTION_ID]),
            c.TX_DATETIME: pd.Timestamp(r[c.TX_DATETIME]).isoformat(),
            c.CUSTOMER_ID: str(r[c.CUSTOMER_ID]),
            c.TERMINAL_ID: str(r[c.TERMINAL_ID]),
            c.TX_AMOUNT: float(r[c.TX_AMOUNT]),
        }]})
        for _, r in traffic.iterrows()
    ]
    described = {
        "transactions_in_history_window": len(window),
        "request_transactions": len(bodies),
        "customers": int(window[c.CUSTOMER_ID].nunique()),
        "terminals": int(window[c.TERMINAL_ID].nunique()),
        "cutoff": str(cutoff),
        "model_rounds": trained.booster.current_iteration(),
    }
    return config, bodies, described


def _batch_totals(url: str) -> tuple[float, float]:
    """(transactions scored, model calls) so far, from the server's metrics."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        if line.startswith("vigil_serving_batch_size_transactions_"):
            key, _, value = line.rpartition(" ")
            kind = key.split("{")[0].rsplit("_", 1)[1]
            if kind in values:
                values[kind] += float(value)
    return values["sum"], values["count"]


def main() -> dict[str, Any]:
    from inference.client import free_port, start_server

    project = f"vigil_bench_{uuid.uuid4().hex[:10]}"
    DATA.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {"stock": [], "vigil": []}
    batches: dict[int, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-serving-", dir=DATA) as tmp:
        home = Path(tmp)
        t0 = time.perf_counter()
        config, bodies, described = _prepare(home, project)
        setup_s = time.perf_counter() - t0
        bodies_file = home / "bodies.json"
        bodies_file.write_text(json.dumps(bodies))
        stock_port = free_port()
        servers = {}
        try:
            servers["vigil"] = start_server(
                config=config, extra_args=["--log-root", str(home / "inference_log")],
                log_path=home / "vigil.log",
            )
            servers["stock"] = start_server(
                command=[sys.executable, "-m", "bench.serving", "stock-server", str(config),
                         str(stock_port)],
                port=stock_port, log_path=home / "stock.log",
            )
            for concurrency in CONCURRENCY:
                for name in ("stock", "vigil"):
                    path = "/v1/models/fraud:predict"
                    if name == "vigil":
                        before = _batch_totals(servers[name].url)
                    result = run_loadgen(servers[name].url, path, bodies_file, concurrency)
                    runs[name].append(result)
                    if name == "vigil":
                        after = _batch_totals(servers[name].url)
                        calls = after[1] - before[1]
                        batches[concurrency] = (
                            round((after[0] - before[0]) / calls, 2) if calls else None
                        )
                    print(f"   {name:5} {concurrency:2} clients: {result['requests_per_s']:8.1f} "
                          f"req/s  p50 {result.get('p50_ms')} ms  p99 {result.get('p99_ms')} ms"
                          f"  errors {result['errors']}  (load {result['loadavg_1m_before']})",
                          flush=True)
        finally:
            for server in servers.values():
                server.stop(timeout_s=60)
            _delete_project(project)
    return _result(runs, batches, described, setup_s)


def _delete_project(project: str) -> None:
    from feature_store.online import delete_project_keys, redis_client

    client = redis_client("redis://127.0.0.1:6379/0", 30.0)
    try:
        delete_project_keys(client, project)
    finally:
        client.close()


def _result(runs: dict[str, list[dict[str, Any]]], batches: dict[int, float | None],
            described: dict[str, Any], setup_s: float) -> dict[str, Any]:
    stock = {r["concurrency"]: r for r in runs["stock"]}
    vigil = {r["concurrency"]: r for r in runs["vigil"]}

    def row(what: str, key: str, level: int, *, higher_is_better: bool = False,
            target: str | None = None, met: bool | None = None) -> dict[str, Any]:
        s, v = stock[level][key], vigil[level][key]
        ratio = (v / s if higher_is_better else s / v) if s and v else None
        out: dict[str, Any] = {"what": what, "stock": s, "vigil": v,
                               "ratio": round(ratio, 1) if ratio else None}
        if target is not None:
            out["target"] = target
            out["met"] = met
        return out

    errors = sum(r["errors"] for r in runs["vigil"])
    summary = [
        row("1 client: p50 latency (ms)", "p50_ms", 1),
        row("1 client: p99 latency (ms)", "p99_ms", 1, target=f"<= {TARGET_P99_1_MS:g} ms",
            met=vigil[1]["p99_ms"] <= TARGET_P99_1_MS),
        row("8 clients: requests/s", "requests_per_s", 8, higher_is_better=True),
        row("8 clients: p99 latency (ms)", "p99_ms", 8),
        row("32 clients: requests/s", "requests_per_s", 32, higher_is_better=True,
            target=f">= {TARGET_RPS_32:g}", met=vigil[32]["requests_per_s"] >= TARGET_RPS_32),
        row("32 clients: p99 latency (ms)", "p99_ms", 32, target=f"<= {TARGET_P99_32_MS:g} ms",
            met=vigil[32]["p99_ms"] <= TARGET_P99_32_MS),
        {"what": "errors, all runs", "stock": sum(r["errors"] for r in runs["stock"]),
         "vigil": errors, "target": "0", "met": errors == 0},
    ]
    return {
        "setup": {**described, "seconds": round(setup_s, 1)},
        "load": {"duration_s": DURATION_S, "warmup_s": WARMUP_S, "concurrency": CONCURRENCY,
                 "generator": "separate process, asyncio+uvloop, HTTP/1.1 keep-alive, "
                              "closed loop, one transaction per request (V1)"},
        "vigil_processes": 1,
        "vigil_mean_batch_size": batches,
        "runs": runs,
        "summary": summary,
        "targets_met": all(r.get("met", True) for r in summary),
    }


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("loadgen")
    for name in ("host", "port", "path", "bodies", "concurrency", "duration", "warmup"):
        gen.add_argument(name)
    stock = sub.add_parser("stock-server")
    stock.add_argument("config")
    stock.add_argument("port", type=int)
    args = parser.parse_args(argv)
    if args.command == "loadgen":
        bodies = json.loads(Path(args.bodies).read_text())
        print(json.dumps(loadgen(args.host, int(args.port), args.path, bodies,
                                 int(args.concurrency), float(args.duration),
                                 float(args.warmup))))
    else:
        stock_server(args.config, args.port)


if __name__ == "__main__":
    _cli(sys.argv[1:])
