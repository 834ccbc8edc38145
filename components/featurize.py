"""Step 2, featurize: features into the Feast offline store, then the point-in-time training set.

* The features of every transaction (one definition, :mod:`feature_store.transforms`, its SQL
  run by DuckDB or Spark: ``engine``) and the history snapshots go to the offline store under
  the settings' home (:func:`feature_store.jobs.featurize`).
* The rows of the training and test windows are then read back through Feast's historical
  retrieval of the feature service ``fraud_v1`` (:func:`feature_store.offline.training_set`):
  the training set is what the feature store serves, point in time, not a side copy.
* The dataset written for the next steps holds those rows with their features and a ``SPLIT``
  column (``train``/``valid``/``test``), plus the label-delay rows (``delay``, no features), which
  the evaluation needs to know which cards were already known to be compromised.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from components.results import Featurization
from components.runtime import say
from components.windows import DELAY, FIT, SPLIT_COLUMN, SPLITS, TEST, VALID, WindowSpec
from feature_store.config import StoreConfig
from feature_store.engines import DEFAULT_ENGINE, DEFAULT_MASTER, ENGINES, SparkOptions
from feature_store.jobs import featurize
from feature_store.names import FEATURE_SERVICE
from feature_store.offline import training_set
from feature_store.store import open_store
from feature_store.transforms import DEFAULT_SPEC
from vigil import contract as c
from vigil.data.ingest import read_transactions
from vigil.data.summary import summarize_transactions
from vigil.errors import DataError, FeatureStoreError
from vigil.settings import Settings

STEP = "featurize"
#: Columns every dataset row carries besides the features.
DATASET_KEYS = (*c.KEY_COLUMNS, c.TX_TIME_DAYS)


def featurize_data(
    transactions: str | Path,
    *,
    settings: Settings,
    windows: WindowSpec,
    dataset: Path,
    engine: str = DEFAULT_ENGINE,
    spark_master: str = DEFAULT_MASTER,
) -> Featurization:
    """Featurize ``transactions`` into the offline store of ``settings`` (feature SQL on
    ``engine``: duckdb, or spark with ``spark_master``) and write the point-in-time dataset of
    the evaluation windows to ``dataset`` (parquet)."""
    if engine not in ENGINES:
        raise FeatureStoreError(f"feature engine {engine!r}: expected one of {', '.join(ENGINES)}")
    raw = read_transactions(transactions).frame
    if raw.empty:
        raise DataError("no transactions to featurize", file=str(transactions))
    summary = summarize_transactions(raw)
    resolved = windows.resolve(*summary.span())
    say(STEP, f"{summary.rows:,} transactions {summary.first} .. {summary.last}; "
              f"{resolved.describe()}")
    times = raw[c.TX_DATETIME]

    t0 = time.perf_counter()
    store = StoreConfig.from_settings(settings)
    spark = SparkOptions(master=spark_master) if engine == "spark" else None
    _, result = featurize(raw, None, store=store, engine=engine, spark=spark)
    say(STEP, f"{result.rows:,} rows x {len(result.features)} features into the offline store "
              f"in {time.perf_counter() - t0:.1f} s ({engine})")

    split = resolved.split_of(times)
    wanted = np.isin(split, (FIT, VALID, TEST))
    rows = raw.loc[wanted].reset_index(drop=True)
    t0 = time.perf_counter()
    frame = training_set(open_store(store), rows, feature_service=FEATURE_SERVICE)
    say(STEP, f"{len(frame):,} rows of {FEATURE_SERVICE} through Feast (point in time) "
              f"in {time.perf_counter() - t0:.1f} s")
    frame[c.TX_TIME_DAYS] = rows[c.TX_TIME_DAYS].to_numpy()
    frame[SPLIT_COLUMN] = split[wanted]

    delay = raw.loc[split == DELAY]
    delay_rows = pd.DataFrame(
        {
            c.TRANSACTION_ID: delay[c.TRANSACTION_ID].astype(str).to_numpy(),
            c.TX_DATETIME: delay[c.TX_DATETIME].to_numpy(),
            c.CUSTOMER_ID: delay[c.CUSTOMER_ID].astype(str).to_numpy(),
            c.TERMINAL_ID: delay[c.TERMINAL_ID].astype(str).to_numpy(),
            c.TX_TIME_DAYS: delay[c.TX_TIME_DAYS].to_numpy(),
            c.TX_FRAUD: delay[c.TX_FRAUD].to_numpy(),
            SPLIT_COLUMN: DELAY,
        }
    )
    columns = [*DATASET_KEYS, *DEFAULT_SPEC.features, c.TX_FRAUD, SPLIT_COLUMN]
    out = pd.concat([frame[columns], delay_rows], ignore_index=True)[columns]
    out = out.sort_values([c.TX_DATETIME], kind="stable").reset_index(drop=True)

    split_rows = {name: int((out[SPLIT_COLUMN] == name).sum()) for name in SPLITS}
    split_frauds = {
        name: int(out.loc[out[SPLIT_COLUMN] == name, c.TX_FRAUD].sum()) for name in SPLITS
    }
    _require_both_classes(split_rows, split_frauds, resolved.describe())
    dataset.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(dataset, index=False)
    say(STEP, "dataset " + ", ".join(
        f"{name} {split_rows[name]:,} rows ({split_frauds[name]:,} frauds)" for name in SPLITS
    ))
    return Featurization(
        source=str(transactions),
        transactions=summary,
        windows=resolved,
        split_rows=split_rows,
        split_frauds=split_frauds,
        feature_service=FEATURE_SERVICE,
    )


def _require_both_classes(rows: dict[str, int], frauds: dict[str, int], windows: str) -> None:
    for name, purpose in ((FIT, "training"), (VALID, "validation"), (TEST, "test")):
        if frauds[name] == 0 or frauds[name] == rows[name]:
            raise DataError(
                f"the {purpose} window holds {rows[name]:,} transactions of which "
                f"{frauds[name]:,} are frauds: it needs both frauds and genuine transactions "
                f"({windows}); widen the window or use more data"
            )
