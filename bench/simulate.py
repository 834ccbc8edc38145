"""Simulator at the handbook's size: time, and the data set's statistics against the book's.

Stock way: the book's generative process written as plain per-customer, per-day Python loops
(the shape of the handbook's reference generator), timed on a slice of customers and
compared per transaction.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from vigil.data.simulate import (
    BOOK_SCENARIOS,
    BOOK_TRANSACTIONS,
    SimulationConfig,
    simulate,
    write_daily,
)

LOOP_CUSTOMERS = 300


def loop_generator(config: SimulationConfig, n_customers: int) -> int:
    """Transactions of ``n_customers`` customers, one Python loop iteration per transaction."""
    rng = random.Random(config.seed)
    terminals = np.array(
        [[rng.uniform(0, 100), rng.uniform(0, 100)] for _ in range(config.n_terminals)]
    )
    tree = cKDTree(terminals)
    rows = []
    for customer in range(n_customers):
        x, y = rng.uniform(0, 100), rng.uniform(0, 100)
        mean_amount = rng.uniform(5, 100)
        std_amount = mean_amount / 2
        mean_nb = rng.uniform(0, 4)
        available = tree.query_ball_point([x, y], r=config.radius)
        for day in range(config.n_days):
            for _ in range(int(np.random.poisson(mean_nb))):
                t = int(rng.gauss(86_400 / 2, 20_000))
                if 0 < t < 86_400:
                    amount = rng.gauss(mean_amount, std_amount)
                    if amount < 0:
                        amount = rng.uniform(0, 2 * mean_amount)
                    if available:
                        rows.append(
                            (
                                t + day * 86_400,
                                day,
                                customer,
                                rng.choice(available),
                                round(amount, 2),
                            )
                        )
    return len(rows)


def main() -> dict[str, Any]:
    from bench.common import DATA

    config = SimulationConfig()
    t0 = time.perf_counter()
    sim = simulate(config)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_daily(sim.transactions, DATA / "sim_full", config.start_date, config.n_days)
    t_write = time.perf_counter() - t0
    stats = sim.statistics()
    vigil_seconds = t_sim + t_write

    t0 = time.perf_counter()
    n_loop = loop_generator(config, LOOP_CUSTOMERS)
    t_loop = time.perf_counter() - t0
    loop_us_per_tx = t_loop / n_loop * 1e6
    vigil_us_per_tx = t_sim / stats["transactions"] * 1e6  # type: ignore[operator]

    n_tx = int(stats["transactions"])  # type: ignore[call-overload]
    scenarios: dict[int, int] = stats["scenarios"]  # type: ignore[assignment]
    rate = float(stats["fraud_rate"])  # type: ignore[arg-type]
    deviation = n_tx / BOOK_TRANSACTIONS - 1
    book_total = sum(BOOK_SCENARIOS.values())
    ours_total = sum(scenarios.values())
    shares = {k: (scenarios[k] / ours_total, BOOK_SCENARIOS[k] / book_total) for k in (1, 2, 3)}
    shares_ok = all(abs(a - b) < 0.05 for a, b in shares.values())
    summary = [
        {
            "what": "full-size simulate + write (s)",
            "vigil": round(vigil_seconds, 2),
            "target": "<= 30 s",
            "met": vigil_seconds <= 30,
        },
        {
            "what": "generation per transaction (µs)",
            "stock": round(loop_us_per_tx, 2),
            "vigil": round(vigil_us_per_tx, 3),
            "ratio": round(loop_us_per_tx / vigil_us_per_tx, 1),
        },
        {
            "what": "transactions",
            "stock": BOOK_TRANSACTIONS,
            "vigil": n_tx,
            "ratio": round(1 + deviation, 4),
            "target": "within 3%",
            "met": abs(deviation) <= 0.03,
        },
        {
            "what": "fraud rate",
            "stock": 0.0084,
            "vigil": round(rate, 4),
            "target": "0.7-1.0%",
            "met": 0.007 <= rate <= 0.010,
        },
    ] + [
        {
            "what": f"scenario {k} share of frauds",
            "stock": round(b, 3),
            "vigil": round(a, 3),
            "target": "within 5 points",
            "met": abs(a - b) < 0.05,
        }
        for k, (a, b) in shares.items()
    ]
    return {
        "statistics": stats,
        "seconds": {"simulate": round(t_sim, 2), "write": round(t_write, 2)},
        "loop_generator": {
            "customers": LOOP_CUSTOMERS,
            "transactions": n_loop,
            "seconds": round(t_loop, 2),
        },
        "summary": summary,
        "targets_met": all(r.get("met", True) for r in summary) and shares_ok,
    }
