"""Simulated traffic with and without a drift scenario, featurized by the one feature definition,
scored by a real LightGBM model and written like the inference log (shared by the drift tests)."""

from __future__ import annotations

import dataclasses
import functools
from datetime import date, timedelta
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.transforms import DEFAULT_SPEC, batch_features
from inference.scoring import FRAUD, LEGIT
from vigil import contract as c
from vigil.data.drift import Drift
from vigil.data.simulate import SimulationConfig, simulate
from vigil.training import train_lightgbm

CONFIG = SimulationConfig(n_customers=500, n_terminals=1_000, n_days=75, seed=7)
FEATURES = tuple(DEFAULT_SPEC.features)
#: The model trains on these days (after the 30-day windows have filled up)...
TRAIN_START, TRAIN_END = date(2018, 5, 11), date(2018, 5, 25)
#: ... and is served from here on; drift scenarios start on the same day.
SERVED_START = date(2018, 5, 31)
THRESHOLD = 0.5


#: A world where card testing (200 payments a day at 200 terminals) is a small share of the
#: traffic, as at the handbook's scale: ~4% of ~5k transactions and 2% of the terminals a day
#: (handbook: 2% of ~10k and 2%). In :data:`CONFIG` it is a sixth of the traffic.
WIDE_CONFIG = dataclasses.replace(CONFIG, n_customers=2_500, n_terminals=10_000)


@functools.cache
def features(scenario: str | None = None, config: SimulationConfig = CONFIG) -> pd.DataFrame:
    """Features of the simulation (``config``), drifted by ``scenario`` from
    :data:`SERVED_START`. Cached: take a copy before changing it."""
    drifts = (Drift(scenario, SERVED_START),) if scenario else ()
    sim = simulate(dataclasses.replace(config, drifts=drifts))
    return batch_features(sim.transactions, DEFAULT_SPEC)


def days(frame: pd.DataFrame, first: date, last: date) -> pd.DataFrame:
    t = frame[c.TX_DATETIME]
    end = pd.Timestamp(last + timedelta(days=1))
    return frame[(t >= pd.Timestamp(first)) & (t < end)].reset_index(drop=True)


@functools.cache
def booster() -> lightgbm.Booster:
    train = days(features(), TRAIN_START, TRAIN_END)
    return train_lightgbm(train, feature_names=FEATURES, num_boost_round=30).booster


def scored(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["score"] = booster().predict(out[list(FEATURES)].to_numpy(np.float64))
    # The decisions the model server writes (not a vocabulary of the test's own).
    out["decision"] = np.where(out["score"] >= THRESHOLD, FRAUD, LEGIT)
    return out


def write_log(frame: pd.DataFrame, root: Path, model_name: str, version: int) -> None:
    """``frame`` (scored) as inference-log files: ``date=<day>/part-....parquet``, the log's
    column types."""
    day = frame[c.TX_DATETIME].dt.date
    for d, rows in frame.groupby(day):
        table = pa.table({
            c.TRANSACTION_ID: rows[c.TRANSACTION_ID].astype(str).to_numpy(),
            c.TX_DATETIME: pa.array(rows[c.TX_DATETIME].to_numpy().astype("datetime64[us]")),
            c.CUSTOMER_ID: rows[c.CUSTOMER_ID].astype(str).to_numpy(),
            c.TERMINAL_ID: rows[c.TERMINAL_ID].astype(str).to_numpy(),
            **{f: rows[f].to_numpy() for f in FEATURES},
            "score": rows["score"].to_numpy(),
            "decision": rows["decision"].to_numpy(),
            "threshold": np.full(len(rows), THRESHOLD),
            "model_name": [model_name] * len(rows),
            "model_version": np.full(len(rows), version, dtype=np.int64),
        })
        folder = root / f"date={d.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"part-{d:%Y%m%d}T000000-test-1-0.parquet")
