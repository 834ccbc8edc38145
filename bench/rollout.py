"""A bad candidate's rollout on the local stack: how fast it is taken back, what clients saw.

The local rollout stack (two ``vigil serve`` processes, HAProxy, Prometheus, a Pushgateway) on
127.0.0.1 serves a champion trained on simulated transactions (features from real Redis, a
project of its own, deleted afterwards). The candidate answers every request with a 5xx (a
model trained with a multiclass objective: two probabilities per transaction, which the server
cannot decide on). Keep-alive clients send traffic through HAProxy the whole time.

* **Vigil**: ``vigil rollout`` with steps 10, 25, 50, 100, a 5 s interval and threshold 2. From
  the rollout's history: the time from the candidate's first traffic to 0% (target: interval x
  threshold + 5 s); from the clients: errors while the candidate had traffic (its share) and
  after (target: none).
* **Stock**: KServe's canary without a controller (``canaryTrafficPercent: 10`` and nobody
  deciding), played by the same stack: the candidate at 10% for as long as Vigil's rollout took;
  the clients' errors over that time, and it is still failing at the end.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

INTERVAL_S = 5.0
THRESHOLD = 2
STEPS = (10, 25, 50, 100)
CLIENTS = 4
PAUSE_S = 0.01
PER_REQUEST = 8
#: Answers this close after the switch to 0% may have been dispatched before it.
SWITCH_S = 0.5


def _prepare(home: Path, project: str) -> tuple[Any, dict[str, int], list[bytes]]:
    """Settings, the champion and the failing candidate registered, request bodies."""
    import lightgbm as lgb
    import pandas as pd
    import yaml

    from feature_store.config import StoreConfig
    from feature_store.jobs import featurize, materialize
    from feature_store.transforms import DEFAULT_SPEC
    from inference.client import free_port
    from rollout.traffic import request_bodies
    from vigil import contract as c
    from vigil.data.simulate import SimulationConfig, simulate
    from vigil.registry import Registry
    from vigil.settings import load_settings
    from vigil.training import train_lightgbm

    config = home / "vigil.yaml"
    config.write_text(yaml.safe_dump({
        "home": str(home), "features": {"project": project},
        "rollout": {"local": {"port": free_port(), "prometheus_port": free_port(),
                              "pushgateway_port": free_port(), "scrape_interval_s": 1.0}},
    }))
    settings = load_settings(config, env={})
    sim = simulate(SimulationConfig(n_customers=500, n_terminals=1_000, n_days=45, seed=1))
    tx = sim.transactions
    cutoff = pd.Timestamp(sim.config.start_date) + pd.Timedelta(days=40)
    store = StoreConfig.from_settings(settings)
    features, _ = featurize(tx, None, store=store, cutoff=cutoff.to_pydatetime())
    materialize(store)
    train = features[features[c.TX_DATETIME] <= cutoff]
    names = DEFAULT_SPEC.features
    registry = Registry.from_settings(settings)
    versions = {}
    models: dict[str, lgb.Booster] = {
        "champion": train_lightgbm(train, num_boost_round=50, feature_names=names).booster,
        "failing": train_lightgbm(train, num_boost_round=10, feature_names=names,
                                  params={"objective": "multiclass", "num_class": 2}).booster,
    }
    for name, booster in models.items():
        versions[name] = registry.register_model(
            booster, name="fraud", threshold=0.5, feature_service="fraud_v1",
            data_range=(sim.config.start_date, date(2018, 5, 10)), metrics={},
            alias="champion" if name == "champion" else None,
        ).version
    live = tx[tx[c.TX_DATETIME] > cutoff].sample(frac=1.0, random_state=0)
    return settings, versions, request_bodies(live, PER_REQUEST)


def _errors(answers: list[Any]) -> int:
    return sum(1 for a in answers if a.status != 200)


def main() -> dict[str, Any]:
    from bench.common import DATA
    from rollout.controller import RolloutRequest, history, rollout
    from rollout.local import LocalTarget, stack_down, stack_up
    from rollout.traffic import Traffic

    project = f"vigil_bench_{uuid.uuid4().hex[:10]}"
    DATA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-rollout-", dir=DATA) as tmp:
        t0 = time.perf_counter()
        settings, versions, bodies = _prepare(Path(tmp), project)
        setup_s = time.perf_counter() - t0
        try:
            stack = stack_up(settings, print)
            # ------------------------------------------------------------------- Vigil
            with Traffic(stack.url, bodies, clients=CLIENTS, pause_s=PAUSE_S) as traffic:
                time.sleep(2.0)
                started = time.time()
                final = rollout(settings, RolloutRequest.from_settings(
                    settings, versions["failing"], target="local", steps=STEPS,
                    interval_s=INTERVAL_S, threshold=THRESHOLD), print)
                time.sleep(5.0)
                ended = time.time()
            events = history(settings)
            first = next(e["time"] for e in events
                         if e["event"] == "traffic" and e["traffic_percent"] > 0)
            zero = next(e["time"] for e in events
                        if e["event"] == "traffic" and e["traffic_percent"] == 0)
            answers = traffic.answers(since=started)
            exposed = [a for a in answers if first <= a.at <= zero + SWITCH_S]
            after = [a for a in answers if a.at > zero + SWITCH_S]
            vigil = {
                "phase": final.phase,
                "reason": final.reason,
                "first_traffic_to_zero_s": round(zero - first, 2),
                "requests": len(answers),
                "errors": _errors(answers),
                "requests_while_exposed": len(exposed),
                "errors_while_exposed": _errors(exposed),
                "requests_after_rollback": len(after),
                "errors_after_rollback": _errors(after),
                "client_seconds": round(ended - started, 1),
            }
            print(f"   vigil: {final.phase} in {vigil['first_traffic_to_zero_s']} s after the "
                  f"first traffic; errors {vigil['errors']} of {vigil['requests']} requests, "
                  f"{vigil['errors_after_rollback']} after", flush=True)
            # ------------------------------------------------------------------- stock
            target = LocalTarget.create(settings)
            target.prepare(versions["failing"])
            duration = ended - started
            with Traffic(stack.url, bodies, clients=CLIENTS, pause_s=PAUSE_S) as traffic:
                target.set_traffic(10)
                stock_started = time.time()
                time.sleep(duration)
                last = traffic.answers(since=time.time() - 5.0)
            stock_answers = traffic.answers(since=stock_started)
            target.rollback()
            stock = {
                "canary_percent": 10,
                "seconds": round(duration, 1),
                "requests": len(stock_answers),
                "errors": _errors(stock_answers),
                "errors_in_last_5_s": _errors(last),
            }
            print(f"   stock: canary at 10% for {duration:.0f} s, errors {stock['errors']} of "
                  f"{stock['requests']} requests ({stock['errors_in_last_5_s']} in the last "
                  "5 s)", flush=True)
        finally:
            stack_down(settings)
            _delete_project(project)
    return _result(vigil, stock, setup_s)


def _delete_project(project: str) -> None:
    from feature_store.online import delete_project_keys, redis_client

    client = redis_client("redis://127.0.0.1:6379/0", 30.0)
    try:
        delete_project_keys(client, project)
    finally:
        client.close()


def _result(vigil: dict[str, Any], stock: dict[str, Any], setup_s: float) -> dict[str, Any]:
    target_s = INTERVAL_S * THRESHOLD + 5.0
    exposed = vigil["requests_while_exposed"]
    share = vigil["errors_while_exposed"] / exposed if exposed else None
    summary = [
        {"what": "bad candidate (5xx): first traffic to 0% (s)",
         "vigil": vigil["first_traffic_to_zero_s"],
         "target": f"<= {target_s:g} s (interval {INTERVAL_S:g} s x threshold {THRESHOLD} + 5)",
         "met": vigil["phase"] == "rolled_back"
         and vigil["first_traffic_to_zero_s"] <= target_s},
        {"what": "client-visible errors, whole rollout (stock: 10% canary, same time)",
         "stock": stock["errors"], "vigil": vigil["errors"],
         "ratio": round(stock["errors"] / vigil["errors"], 1) if vigil["errors"] else None},
        {"what": "errors among requests while the candidate had traffic (share)",
         "vigil": round(share, 4) if share is not None else None,
         "target": f"~ its traffic ({STEPS[0]}%)"},
        {"what": "client-visible errors after the rollback (stock: its last 5 s, never "
                 "rolled back)",
         "stock": stock["errors_in_last_5_s"], "vigil": vigil["errors_after_rollback"],
         "target": "0", "met": vigil["errors_after_rollback"] == 0},
    ]
    return {
        "setup": {"seconds": round(setup_s, 1), "interval_s": INTERVAL_S,
                  "threshold": THRESHOLD, "steps": STEPS, "clients": CLIENTS,
                  "transactions_per_request": PER_REQUEST},
        "vigil": vigil,
        "stock": stock,
        "summary": summary,
        "targets_met": all(row.get("met", True) for row in summary),
    }
