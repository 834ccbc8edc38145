"""Offline side of the feature store: the sources Feast reads, and point-in-time training sets.

* :func:`write_sources` turns batch features and raw transactions into the parquet sources of
  ``feature_store.definitions`` (per-transaction features; history snapshots at a cutoff).
* :func:`training_set` retrieves ``fraud_v1`` for given transactions through Feast's historical
  retrieval (DuckDB offline store), point in time.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_store import names as n
from feature_store.transforms import (
    DEFAULT_SPEC,
    FeatureSpec,
    calendar_flags,
    to_epoch_us,
)
from vigil import contract as c
from vigil import ordering
from vigil.errors import FeatureStoreError

if TYPE_CHECKING:  # Feast takes seconds to import: featurizing does not need it
    from feast import FeatureStore


def event_order(transactions: pd.DataFrame) -> np.ndarray:
    """Positions of ``transactions`` in event order: (TX_DATETIME, TRANSACTION_ID), ids
    compared by the one rule of :mod:`vigil.ordering` (as batch and serving do)."""
    return ordering.event_order(
        to_epoch_us(transactions[c.TX_DATETIME]), _strings(transactions[c.TRANSACTION_ID])
    )


def join_timestamps(transactions: pd.DataFrame) -> pd.Series:
    """Timestamps to join each transaction's own feature row on, as tz-aware UTC.

    Feast joins on (entity, timestamp). Transactions of one customer at the same instant would
    share that key, so they are spread 1 µs apart in event order; only the join key moves,
    never the feature values. Everywhere else the key is TX_DATETIME itself.
    """
    ts = transactions[c.TX_DATETIME].astype("datetime64[us]").reset_index(drop=True)
    customers = transactions[c.CUSTOMER_ID].reset_index(drop=True)
    tied = pd.DataFrame({"c": customers, "ts": ts}).duplicated(keep=False).to_numpy()
    if tied.any():
        sub = transactions.reset_index(drop=True).loc[tied]
        ranked = pd.DataFrame(
            {
                "c": sub[c.CUSTOMER_ID].to_numpy(),
                "ts": sub[c.TX_DATETIME].to_numpy(),
                "id": ordering.id_ranks(_strings(sub[c.TRANSACTION_ID])),
            },
            index=sub.index,
        ).sort_values(["c", "ts", "id"])
        rank = ranked.groupby(["c", "ts"], sort=False).cumcount()
        ts = ts.copy()
        ts.loc[rank.index] = ts.loc[rank.index] + pd.to_timedelta(rank.to_numpy(), unit="us")
    return ts.dt.tz_localize(UTC)


@dataclasses.dataclass(frozen=True)
class SourcePaths:
    transaction_features: Path
    customer_history: Path
    terminal_history: Path

    @classmethod
    def under(cls, data_dir: Path) -> SourcePaths:
        return cls(
            data_dir / n.TRANSACTION_FEATURES_FILE,
            data_dir / n.CUSTOMER_HISTORY_FILE,
            data_dir / n.TERMINAL_HISTORY_FILE,
        )


def transaction_feature_rows(
    features: pd.DataFrame, spec: FeatureSpec = DEFAULT_SPEC, created: datetime | None = None
) -> pa.Table:
    """Rows of the ``transaction_features`` source from :func:`batch_features` output."""
    created = created or datetime.now(UTC)
    stamp = pa.timestamp("us", tz="UTC")
    # Arrow columns built directly: through Python strings and a pandas frame this took
    # seconds at a million rows
    columns: dict[str, pa.Array] = {
        c.TRANSACTION_ID: _strings(features[c.TRANSACTION_ID]),
        n.CUSTOMER_ID: _strings(features[c.CUSTOMER_ID]),
        n.TERMINAL_ID: _strings(features[c.TERMINAL_ID]),
        n.EVENT_TIMESTAMP: pa.array(join_timestamps(features), type=stamp),
        n.CREATED: pa.array(
            np.full(len(features), _utc_us(created), dtype=np.int64), type=pa.int64()
        ).cast(stamp),
    }
    for name in spec.features:
        if name.startswith(("CUSTOMER_ID_", "TERMINAL_ID_")):
            columns[name] = pa.array(features[name].to_numpy())
    return pa.table(columns)


def customer_snapshot(
    transactions: pd.DataFrame,
    cutoff: datetime,
    spec: FeatureSpec = DEFAULT_SPEC,
    created: datetime | None = None,
) -> pa.Table:
    """Each customer's transactions in (cutoff - longest window, cutoff], in event order.

    Customers seen before but idle in the horizon get an empty history (known, nothing recent).
    """
    cutoff_us = _utc_us(cutoff)
    time_us = to_epoch_us(transactions[c.TX_DATETIME])
    keep = (time_us <= cutoff_us) & (time_us > cutoff_us - spec.customer_horizon_us)
    recent = transactions.loc[keep]
    order = event_order(recent)
    events = pa.table(
        {
            n.CUSTOMER_ID: _strings(recent[c.CUSTOMER_ID]).take(order),
            n.TX_TIMESTAMPS_US: pa.array(time_us[keep][order]),
            n.TX_AMOUNTS: pa.array(recent[c.TX_AMOUNT].to_numpy(np.float64)[order]),
            n.TX_IDS: _strings(recent[c.TRANSACTION_ID]).take(order),
        }
    )
    everyone = _strings(transactions.loc[time_us <= cutoff_us, c.CUSTOMER_ID])
    return _stamp(_histories(events, n.CUSTOMER_ID, everyone), cutoff, created)


def terminal_snapshot(
    transactions: pd.DataFrame,
    cutoff: datetime,
    spec: FeatureSpec = DEFAULT_SPEC,
    created: datetime | None = None,
) -> pa.Table:
    """Each terminal's labels of transactions up to ``cutoff`` with the time each becomes known.

    Labels in the raw data become known ``label_delay`` days after their transaction; readers
    only count those known at their request time, so labels known after the cutoff are kept.
    """
    cutoff_us = _utc_us(cutoff)
    time_us = to_epoch_us(transactions[c.TX_DATETIME])
    available = time_us + spec.label_delay_us
    keep = (time_us <= cutoff_us) & (available > cutoff_us - spec.terminal_horizon_us)
    order = np.argsort(available[keep], kind="stable")
    events = pa.table(
        {
            n.TERMINAL_ID: _strings(transactions.loc[keep, c.TERMINAL_ID]).take(order),
            n.LABEL_AVAILABLE_US: pa.array(available[keep][order]),
            n.LABEL_FRAUD: pa.array(transactions.loc[keep, c.TX_FRAUD].to_numpy(np.int64)[order]),
        }
    )
    everyone = _strings(transactions.loc[time_us <= cutoff_us, c.TERMINAL_ID])
    return _stamp(_histories(events, n.TERMINAL_ID, everyone), cutoff, created)


def _strings(values: pd.Series) -> pa.Array:
    """Ids as an Arrow string array (zero-copy for the string[pyarrow] columns ingestion makes)."""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        return pa.array(values.array).cast(pa.string())
    if pd.api.types.is_integer_dtype(values.dtype):
        return pa.array(values.to_numpy()).cast(pa.string())
    return pa.array(values.astype(str).to_numpy(dtype=object), type=pa.string())


def _histories(events: pa.Table, key: str, everyone: pa.Array) -> pa.Table:
    """One row per entity of ``everyone`` with its events as lists (input order kept)."""
    value_columns = [col for col in events.column_names if col != key]
    grouped = events.group_by(key, use_threads=False).aggregate(
        [(col, "list") for col in value_columns]
    )
    grouped = grouped.rename_columns([key, *value_columns])
    idle = pc.filter(pc.unique(everyone), pc.invert(pc.is_in(pc.unique(everyone), grouped[key])))
    if len(idle):
        empty = pa.table(
            {key: idle}
            | {
                col: pa.array([[]] * len(idle), grouped.schema.field(col).type)
                for col in value_columns
            }
        )
        grouped = pa.concat_tables([grouped, empty])
    return grouped.sort_by(key)


def write_sources(
    data_dir: Path,
    transactions: pd.DataFrame,
    features: pd.DataFrame,
    cutoff: datetime | None = None,
    spec: FeatureSpec = DEFAULT_SPEC,
) -> SourcePaths:
    """Write the three offline sources into ``data_dir`` (replacing earlier ones).

    ``cutoff`` (default: the last transaction) is the batch time of the history snapshots.
    """
    paths = SourcePaths.under(data_dir)
    paths.transaction_features.parent.mkdir(parents=True, exist_ok=True)
    if cutoff is None:
        cutoff = pd.Timestamp(transactions[c.TX_DATETIME].max()).to_pydatetime()
    created = datetime.now(UTC)
    _write_atomic(transaction_feature_rows(features, spec, created), paths.transaction_features)
    _write_atomic(customer_snapshot(transactions, cutoff, spec, created), paths.customer_history)
    _write_atomic(terminal_snapshot(transactions, cutoff, spec, created), paths.terminal_history)
    return paths


def training_set(
    store: FeatureStore,
    transactions: pd.DataFrame,
    spec: FeatureSpec = DEFAULT_SPEC,
    feature_service: str = n.FEATURE_SERVICE,
    *,
    allow_missing: bool = False,
) -> pd.DataFrame:
    """``fraud_v1`` for ``transactions`` through Feast's point-in-time historical retrieval.

    Returns TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, the model's features in
    model order and TX_FRAUD (when given), in the order of ``transactions``. A transaction
    without a feature row (features computed on other data) is an error unless
    ``allow_missing``, where its features are NaN.
    """
    entity_df = pd.DataFrame(
        {
            c.TRANSACTION_ID: transactions[c.TRANSACTION_ID].astype(str).to_numpy(),
            n.CUSTOMER_ID: transactions[c.CUSTOMER_ID].astype(str).to_numpy(),
            n.TERMINAL_ID: transactions[c.TERMINAL_ID].astype(str).to_numpy(),
            n.EVENT_TIMESTAMP: join_timestamps(transactions).to_numpy(),
            "_row": np.arange(len(transactions)),
        }
    )
    service = store.get_feature_service(feature_service)
    joined = (
        store.get_historical_features(entity_df=entity_df, features=service)
        .to_df()
        .sort_values("_row")
        .reset_index(drop=True)
    )
    time_us = to_epoch_us(transactions[c.TX_DATETIME])
    weekend, night = calendar_flags(time_us)
    out = pd.DataFrame(
        {
            c.TRANSACTION_ID: entity_df[c.TRANSACTION_ID],
            c.TX_DATETIME: transactions[c.TX_DATETIME].to_numpy(),
            c.CUSTOMER_ID: entity_df[n.CUSTOMER_ID],
            c.TERMINAL_ID: entity_df[n.TERMINAL_ID],
            c.TX_AMOUNT: transactions[c.TX_AMOUNT].to_numpy(np.float64),
            "TX_DURING_WEEKEND": weekend,
            "TX_DURING_NIGHT": night,
        }
    )
    missing = [f for f in spec.features if f not in out.columns and f not in joined.columns]
    if missing:
        raise KeyError(f"feature service {feature_service} does not provide {missing}")
    for name in spec.features:
        if name not in out.columns:
            out[name] = joined[name].to_numpy()
    if not allow_missing:
        missing_rows = out[spec.features].isna().any(axis=1)
        if missing_rows.any():
            examples = out.loc[missing_rows, c.TRANSACTION_ID].head(5).tolist()
            raise FeatureStoreError(
                f"{int(missing_rows.sum())} transaction(s) have no row in the offline store "
                f"(e.g. TRANSACTION_ID {examples}): featurize the same data first"
            )
    if c.TX_FRAUD in transactions.columns:
        out[c.TX_FRAUD] = transactions[c.TX_FRAUD].to_numpy()
    return out


def _utc_us(moment: datetime) -> int:
    ts = pd.Timestamp(moment)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.value // 1000)  # Timestamp.value is nanoseconds whatever the unit


def _stamp(snapshot: pa.Table, cutoff: datetime, created: datetime | None) -> pa.Table:
    ts = pd.Timestamp(cutoff)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    stamp = pa.scalar(ts.to_pydatetime(), type=pa.timestamp("us", tz="UTC"))
    made = pa.scalar(created or datetime.now(UTC), type=pa.timestamp("us", tz="UTC"))
    rows = snapshot.num_rows
    snapshot = snapshot.append_column(n.EVENT_TIMESTAMP, pa.repeat(stamp, rows))
    return snapshot.append_column(n.CREATED, pa.repeat(made, rows))


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
