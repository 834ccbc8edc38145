"""Training/serving skew: a sample of served transactions from the inference log, their
features recomputed by the batch path (:func:`feature_store.transforms.batch_features`, the
definition training uses) from the raw transactions, compared value by value. The mismatch rate
is expected to be 0: serving and training compute the same features.

Rows served degraded (default features because the online store was slow or down: the log's
``degraded`` column) are left out: their features are the documented defaults on purpose.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.error
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow.dataset as pads
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import push_to_gateway

from feature_store.transforms import DEFAULT_SPEC, batch_features
from monitoring.drift import Window, parse_window
from vigil import contract as c
from vigil.data.ingest import read_transactions
from vigil.errors import DataError, VigilError

PUSH_JOB: Final = "vigil_skew"


@dataclasses.dataclass(frozen=True)
class SkewResult:
    model_name: str
    compared: int
    #: Served rows without a batch row (the raw data lacks their transaction).
    missing: int
    mismatched: int
    feature_mismatches: dict[str, int]
    window: Window | None
    seconds: float
    finished_at: datetime

    @property
    def mismatch_rate(self) -> float:
        return self.mismatched / self.compared if self.compared else 0.0


def check_skew(
    log_root: str | Path,
    transactions: str | Path,
    *,
    model_name: str,
    window: str | None = None,
    sample: int = 1_000,
    features: Sequence[str] = DEFAULT_SPEC.features,
    atol: float = 1e-6,
    seed: int = 0,
) -> SkewResult:
    t0 = time.perf_counter()
    ds = pads.dataset(str(log_root), format="parquet", partitioning="hive",
                      exclude_invalid_files=True)
    columns = [c.TRANSACTION_ID, c.TX_DATETIME, *features]
    missing_columns = [col for col in columns if col not in ds.schema.names]
    if missing_columns:
        raise DataError(f"inference log lacks columns {missing_columns}", file=str(log_root))
    extra = ["degraded"] if "degraded" in ds.schema.names else []
    served = ds.to_table(columns=columns + extra).to_pandas()
    span = None
    if window:
        newest = served[c.TX_DATETIME].max() if len(served) else None
        span = parse_window(window, None if newest is None else newest.to_pydatetime())
        t = served[c.TX_DATETIME]
        served = served[(t >= span.start) & (t < span.end)]
    if extra:
        served = served[~served["degraded"].astype(bool)]
    if served.empty:
        raise VigilError(f"skew: no served rows to compare in {log_root}"
                         + (f" within {span.describe()}" if span else ""))
    served = served.sample(n=min(sample, len(served)), random_state=seed)
    served[c.TRANSACTION_ID] = served[c.TRANSACTION_ID].astype(str)
    raw = read_transactions(transactions, require_labels=False).frame
    batch = batch_features(raw, DEFAULT_SPEC)
    batch[c.TRANSACTION_ID] = batch[c.TRANSACTION_ID].astype(str)
    joined = served.merge(batch[[c.TRANSACTION_ID, *features]], on=c.TRANSACTION_ID,
                          how="left", suffixes=("", "_batch"), indicator=True)
    found = joined["_merge"] == "both"
    compared = joined[found]
    bad = np.zeros(len(compared), dtype=bool)
    per_feature = {}
    for f in features:
        s = compared[f].to_numpy(np.float64)
        b = compared[f"{f}_batch"].to_numpy(np.float64)
        differs = ~np.isclose(s, b, atol=atol, rtol=1e-9, equal_nan=True)
        per_feature[f] = int(differs.sum())
        bad |= differs
    return SkewResult(
        model_name=model_name, compared=len(compared), missing=int((~found).sum()),
        mismatched=int(bad.sum()), feature_mismatches=per_feature, window=span,
        seconds=time.perf_counter() - t0, finished_at=datetime.now(UTC),
    )


def skew_registry(result: SkewResult) -> CollectorRegistry:
    registry = CollectorRegistry()
    name = result.model_name
    Gauge("vigil_skew_mismatch_rate",
          "Share of sampled served transactions whose features differ from the batch path's.",
          ["model_name"], registry=registry).labels(name).set(result.mismatch_rate)
    per = Gauge("vigil_skew_feature_mismatches",
                "Sampled served transactions whose value of this feature differs from batch.",
                ["model_name", "feature"], registry=registry)
    for f, n in result.feature_mismatches.items():
        per.labels(name, f).set(n)
    Gauge("vigil_skew_compared_transactions", "Served transactions compared in the last check.",
          ["model_name"], registry=registry).labels(name).set(result.compared)
    Gauge("vigil_skew_missing_transactions",
          "Sampled served transactions the raw data lacks (not compared).",
          ["model_name"], registry=registry).labels(name).set(result.missing)
    Gauge("vigil_skew_last_success_timestamp_seconds", "When the skew check last ran.",
          ["model_name"], registry=registry).labels(name).set(result.finished_at.timestamp())
    return registry


def push(url: str, result: SkewResult, timeout_s: float = 10.0) -> None:
    try:
        push_to_gateway(url, job=PUSH_JOB, registry=skew_registry(result),
                        grouping_key={"model_name": result.model_name}, timeout=timeout_s)
    except (urllib.error.URLError, OSError) as e:
        raise VigilError(f"cannot push skew metrics to the Pushgateway at {url}: {e}") from e

