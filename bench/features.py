"""Batch featurization at the handbook's size: Vigil's SQL windows vs. pandas per-group rolling.

Stock way: the straightforward pandas implementation of the same 15 baseline features —
``groupby(entity).apply`` with time-based ``rolling`` windows per customer and per terminal
(the handbook's own approach). Both run in this process on the same frame; their outputs are
compared, so the ratio is between two implementations of the same numbers.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from feature_store.transforms import DEFAULT_SPEC, batch_features
from vigil import contract as c
from vigil.data.ingest import read_transactions

TARGET_SECONDS = 10.0


def _customer_windows(group: pd.DataFrame) -> pd.DataFrame:
    group = group.sort_values(c.TX_DATETIME).set_index(c.TX_DATETIME)
    out = pd.DataFrame(index=group.index)
    for n in DEFAULT_SPEC.customer_windows_days:
        rolling = group[c.TX_AMOUNT].rolling(f"{n}D")
        count, total = rolling.count(), rolling.sum()
        out[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = count
        out[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = total / count
    out[c.TRANSACTION_ID] = group[c.TRANSACTION_ID].to_numpy()
    return out.reset_index(drop=True)


def _terminal_windows(group: pd.DataFrame) -> pd.DataFrame:
    group = group.sort_values(c.TX_DATETIME).set_index(c.TX_DATETIME)
    delay = DEFAULT_SPEC.label_delay_days
    frauds_delay = group[c.TX_FRAUD].rolling(f"{delay}D").sum()
    count_delay = group[c.TX_FRAUD].rolling(f"{delay}D").count()
    out = pd.DataFrame(index=group.index)
    for n in DEFAULT_SPEC.terminal_windows_days:
        frauds = group[c.TX_FRAUD].rolling(f"{delay + n}D").sum() - frauds_delay
        count = group[c.TX_FRAUD].rolling(f"{delay + n}D").count() - count_delay
        out[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = count
        out[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = (frauds / count).fillna(0.0)
    out[c.TRANSACTION_ID] = group[c.TRANSACTION_ID].to_numpy()
    return out.reset_index(drop=True)


def pandas_features(tx: pd.DataFrame) -> pd.DataFrame:
    frame = tx[
        [c.TRANSACTION_ID, c.TX_DATETIME, c.CUSTOMER_ID, c.TERMINAL_ID, c.TX_AMOUNT, c.TX_FRAUD]
    ]
    customers = frame.groupby(c.CUSTOMER_ID, group_keys=False).apply(_customer_windows)
    terminals = frame.groupby(c.TERMINAL_ID, group_keys=False).apply(_terminal_windows)
    out = frame[[c.TRANSACTION_ID, c.TX_DATETIME, c.TX_AMOUNT]].copy()
    out["TX_DURING_WEEKEND"] = (out[c.TX_DATETIME].dt.weekday >= 5).astype(int)
    out["TX_DURING_NIGHT"] = (out[c.TX_DATETIME].dt.hour <= 6).astype(int)
    return out.merge(customers, on=c.TRANSACTION_ID).merge(terminals, on=c.TRANSACTION_ID)


def main() -> dict[str, Any]:
    from bench.common import handbook_data

    tx = read_transactions(handbook_data()).frame
    t0 = time.perf_counter()
    ours = batch_features(tx)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = pandas_features(tx)
    t_pandas = time.perf_counter() - t0

    ours_by_id = ours.set_index(c.TRANSACTION_ID).loc[theirs[c.TRANSACTION_ID]]
    differing = {}
    for name in DEFAULT_SPEC.baseline_features:
        close = np.isclose(
            ours_by_id[name].to_numpy(float), theirs[name].to_numpy(float), rtol=1e-9, atol=1e-9
        )
        differing[name] = int((~close).sum())
    summary = [
        {
            "what": f"featurize {len(tx):,} transactions (s)",
            "stock": round(t_pandas, 1),
            "vigil": round(t_ours, 2),
            "ratio": round(t_pandas / t_ours, 1),
            "target": f"<= {TARGET_SECONDS:.0f} s",
            "met": t_ours <= TARGET_SECONDS,
        },
        {
            "what": "baseline feature values differing from pandas",
            "stock": 0,
            "vigil": sum(differing.values()),
            "target": "0 (ties at one instant aside)",
        },
    ]
    return {
        "rows": len(tx),
        "seconds": {"vigil_duckdb": round(t_ours, 2), "pandas_groupby_rolling": round(t_pandas, 1)},
        "differing_values": differing,
        "summary": summary,
        "targets_met": t_ours <= TARGET_SECONDS,
    }
