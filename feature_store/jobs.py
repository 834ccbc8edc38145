"""Featurize and materialize: the batch side of the feature store as library functions.

* :func:`featurize` computes the features of raw transactions (one row per transaction) and
  writes them, plus the Feast offline sources of a :class:`~feature_store.config.StoreConfig`.
* :func:`materialize` loads the latest history snapshots into the online store.
* :func:`online_histories` opens the online store the serving path reads: Redis in Feast's
  layout when reachable, else Feast's SQLite store.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_store import names, offline
from feature_store.engines import DEFAULT_ENGINE, ENGINES, SparkOptions
from feature_store.spark import spark_features
from feature_store.transforms import DEFAULT_SPEC, batch_features
from vigil import contract as c
from vigil.errors import FeatureStoreError

if TYPE_CHECKING:
    # The online store's modules import Feast (seconds): featurizing does not load them.
    from feature_store.config import StoreConfig
    from feature_store.online import HistoryStore

log = logging.getLogger(__name__)

FEATURES_FILE = "features.parquet"
#: The raw columns :func:`featurize` uses (for :func:`vigil.data.ingest.read_transactions`).
FEATURIZE_COLUMNS = (*c.KEY_COLUMNS, c.TX_AMOUNT, c.TX_FRAUD)
#: Socket timeout of a materialization's Redis client (script calls of hundreds of keys).
MATERIALIZE_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class FeaturizeResult:
    path: Path
    rows: int
    features: list[str]
    first: datetime | None
    last: datetime | None
    seconds: float
    store_sources: offline.SourcePaths | None


@dataclasses.dataclass(frozen=True)
class MaterializeResult:
    customers: int
    terminals: int
    backend: str
    seconds: float
    #: Feature view -> the event time the loaded snapshot is as of (Feast's materialization
    #: end time; now minus it is what Feast's feature server exports as freshness).
    until: dict[str, datetime] = dataclasses.field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return (self.customers + self.terminals) / self.seconds if self.seconds > 0 else 0.0


def featurize(
    transactions: pd.DataFrame,
    out_dir: Path | None = None,
    *,
    store: StoreConfig | None = None,
    cutoff: datetime | None = None,
    engine: str = DEFAULT_ENGINE,
    spark: SparkOptions | None = None,
) -> tuple[pd.DataFrame, FeaturizeResult]:
    """Features of every transaction; written to ``out_dir/features.parquet`` when given, and
    to the Feast offline sources of ``store`` when given (history snapshots at ``cutoff``,
    default: the last transaction). ``engine``: ``duckdb`` computes them in this process (the
    sorted-arrays executor, or the feature SQL on DuckDB where it declines), ``spark`` runs
    the feature SQL on a session started with ``spark``, stopped before returning."""
    t0 = time.perf_counter()
    features = engine_features(transactions, engine, spark)
    path = Path()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / FEATURES_FILE
        write_features(features, path)
    sources = None
    if store is not None:
        sources = offline.write_sources(store.data_dir, transactions, features, cutoff)
    times = transactions[c.TX_DATETIME]
    result = FeaturizeResult(
        path=path,
        rows=len(features),
        features=list(DEFAULT_SPEC.features),
        first=pd.Timestamp(times.min()).to_pydatetime() if len(times) else None,
        last=pd.Timestamp(times.max()).to_pydatetime() if len(times) else None,
        seconds=time.perf_counter() - t0,
        store_sources=sources,
    )
    return features, result


def write_features(features: pd.DataFrame, path: Path) -> None:
    """``features`` as parquet. Dictionary encoding only where values repeat (entity ids,
    counts, flags): tried on every column, as by default, it costs a fifth of the write for
    the float features, which it does not shrink."""
    table = pa.Table.from_pandas(features, preserve_index=False)
    repeating = [
        f.name for f in table.schema
        if pa.types.is_integer(f.type) or f.name in (c.CUSTOMER_ID, c.TERMINAL_ID)
    ]
    pq.write_table(table, path, use_dictionary=repeating)


def engine_features(
    transactions: pd.DataFrame, engine: str, spark: SparkOptions | None = None
) -> pd.DataFrame:
    """The one feature definition, executed by ``engine`` (one of :data:`ENGINES`)."""
    if engine == "duckdb":
        return batch_features(transactions, DEFAULT_SPEC)
    if engine == "spark":
        return spark_features(transactions, DEFAULT_SPEC, options=spark)
    raise FeatureStoreError(f"feature engine {engine!r}: expected one of {', '.join(ENGINES)}")


def online_histories(config: StoreConfig, timeout_s: float) -> HistoryStore:
    """The online histories of ``config``: Redis when it answers (socket timeout
    ``timeout_s``), else Feast (SQLite)."""
    from feature_store.online import FeastHistories, RedisHistories, redis_client, redis_reachable
    from feature_store.store import open_store

    if redis_reachable(config.redis_url):
        client = redis_client(config.redis_url, timeout_s)
        return RedisHistories(client, config.project, limits=config.limits)
    return FeastHistories(open_store(config, online="sqlite"), limits=config.limits)


def materialize(config: StoreConfig) -> MaterializeResult:
    """Load the history snapshots written by :func:`featurize` into the online store."""
    from feature_store.online import RedisHistories

    paths = offline.SourcePaths.under(config.data_dir)
    for path in (paths.customer_history, paths.terminal_history):
        if not path.exists():
            raise FeatureStoreError(
                f"{path} does not exist: run `vigil featurize` (or the training pipeline) first"
            )
    customers = pq.read_table(paths.customer_history).to_pandas()
    terminals = pq.read_table(paths.terminal_history).to_pandas()
    store = online_histories(config, timeout_s=MATERIALIZE_TIMEOUT_S)
    t0 = time.perf_counter()
    n_customers = store.write_customer_snapshot(customers)
    n_terminals = store.write_terminal_snapshot(terminals)
    seconds = time.perf_counter() - t0
    backend = "redis" if isinstance(store, RedisHistories) else "feast-sqlite"
    log.info(
        "materialized %d customers and %d terminals into %s in %.2f s",
        n_customers,
        n_terminals,
        backend,
        seconds,
    )
    until = {
        view: pd.Timestamp(frame[names.EVENT_TIMESTAMP].max()).to_pydatetime()
        for view, frame in ((names.CUSTOMER_HISTORY, customers),
                            (names.TERMINAL_HISTORY, terminals))
        if names.EVENT_TIMESTAMP in frame and len(frame)
    }
    return MaterializeResult(n_customers, n_terminals, backend, seconds, until)
