"""The one feature definition of the fraud model, for training and for serving.

Every feature is a function of *window statistics* at the transaction's time ``t``:

* customer windows: the customer's transactions in ``(t - n days, t]``, the transaction itself
  included; transactions at the same instant count in arrival order, which batch reproduces as
  ``(TX_DATETIME, TRANSACTION_ID)`` order, ids compared by the one rule of
  :mod:`vigil.ordering`;
* terminal windows: the terminal's *labels* that are known at ``t``. A label becomes known
  ``label_delay`` days after its transaction, so the window ``(t - n, t]`` over label
  availability times is the handbook's ``(t - delay - n, t - delay]`` over transaction times.

Two executors compute the same statistics: :func:`batch_features` with SQL window functions over
the whole history, on DuckDB or on Spark (the same query, :func:`batch_sql`; :class:`Dialect`
holds what the two spell differently), and :func:`online_features` with
NumPy over the short per-entity histories the online store keeps. Both hand the statistics to
:func:`finalize`, the single place where features are defined from them. A parity test proves
the executors agree to 1e-9. (For a single transaction, the online statistics and
:func:`finalize` run on Python numbers instead of one-entry arrays, to the same bits: see
:class:`_ScalarOps`.)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from vigil import contract as c
from vigil.ordering import id_ranks

if TYPE_CHECKING:  # imported where the SQL executor runs
    import duckdb

US_PER_DAY: Final = 86_400_000_000
US_PER_HOUR: Final = 3_600_000_000
#: 1970-01-01 was a Thursday (Monday = 0).
_EPOCH_WEEKDAY: Final = 3
NIGHT_LAST_HOUR: Final = 6


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Windows and label delay; the defaults are the handbook's."""

    customer_windows_days: tuple[int, ...] = (1, 7, 30)
    terminal_windows_days: tuple[int, ...] = (1, 7, 30)
    label_delay_days: int = c.LABEL_DELAY_DAYS
    #: The customer's recent window, compared with a baseline that ends before a 14-day card
    #: compromise could inflate it: (t - 60d, t - 14d].
    recent_days: int = 7
    baseline_days: tuple[int, int] = (60, 14)

    def __post_init__(self) -> None:
        if not self.customer_windows_days or not self.terminal_windows_days:
            raise ValueError("feature spec: at least one customer and one terminal window")
        if min(self.customer_windows_days + self.terminal_windows_days) < 1:
            raise ValueError("feature spec: windows must be >= 1 day")
        if self.label_delay_days < 1:
            # With no delay a transaction's own label would be inside its terminal window.
            raise ValueError("feature spec: label_delay_days must be >= 1")
        if self.recent_days not in self.customer_windows_days:
            raise ValueError("feature spec: recent_days must be one of the customer windows")
        start, end = self.baseline_days
        if not start > end >= self.recent_days >= 1:
            raise ValueError("feature spec: baseline_days must end before the recent window")

    @property
    def customer_horizon_us(self) -> int:
        """How far back a customer's history must reach."""
        return max(*self.customer_windows_days, self.baseline_days[0]) * US_PER_DAY

    @property
    def terminal_horizon_us(self) -> int:
        """How far back (in label availability time) a terminal's history must reach."""
        return max(self.terminal_windows_days) * US_PER_DAY

    @property
    def spread_window_days(self) -> int:
        """The customer window whose amount spread (z-score) is a feature."""
        return max(self.customer_windows_days)

    @property
    def label_delay_us(self) -> int:
        return self.label_delay_days * US_PER_DAY

    @functools.cached_property
    def customer_offsets_us(self) -> np.ndarray:
        """How far back from t each customer window edge lies: the windows, the recent window,
        the baseline's start and end, and t itself (what :func:`online_stats` looks up)."""
        start, end = (d * US_PER_DAY for d in self.baseline_days)
        days = [*self.customer_windows_days, self.recent_days]
        return _frozen([*(n * US_PER_DAY for n in days), start, end, 0])

    @functools.cached_property
    def terminal_offsets_us(self) -> np.ndarray:
        """Terminal window edges back from t: the windows, the horizon, and t itself."""
        windows = (n * US_PER_DAY for n in self.terminal_windows_days)
        return _frozen([*windows, self.terminal_horizon_us, 0])

    @property
    def baseline_features(self) -> list[str]:
        """The handbook's inputs, by its names."""
        names = [c.TX_AMOUNT, "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
        for n in self.customer_windows_days:
            names += [f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW", f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"]
        for n in self.terminal_windows_days:
            names += [f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW", f"TERMINAL_ID_RISK_{n}DAY_WINDOW"]
        return names

    @property
    def extra_features(self) -> list[str]:
        """Vigil's additions: the amount against the customer's own habits, and the terminal's
        freshest known label."""
        r = self.recent_days
        return [
            *(f"CUSTOMER_ID_AMOUNT_RATIO_{m}DAY_WINDOW" for m in self.customer_windows_days),
            f"CUSTOMER_ID_AMOUNT_ZSCORE_{self.spread_window_days}DAY_WINDOW",
            f"CUSTOMER_ID_MAX_AMOUNT_{r}DAY_RATIO_LAGGED",
            f"CUSTOMER_ID_AVG_AMOUNT_{r}DAY_RATIO_LAGGED",
            "TERMINAL_ID_LAST_KNOWN_LABEL",
            "TERMINAL_ID_DAYS_SINCE_LAST_KNOWN_LABEL",
        ]

    @property
    def features(self) -> list[str]:
        """Model inputs, in model order."""
        return self.baseline_features + self.extra_features


def _frozen(values: list[int]) -> np.ndarray:
    array = np.array(values, np.int64)
    array.flags.writeable = False
    return array


DEFAULT_SPEC: Final = FeatureSpec()


# --------------------------------------------------------------------------------------------
# Window statistics -> features (shared by both executors)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class WindowStats:
    """Per-transaction inputs of :func:`finalize`: every field holds one entry per transaction
    (a NumPy array), or, for a single transaction, its value (a Python number)."""

    time_us: Any  # int64, epoch microseconds (UTC)
    amount: Any  # float64
    #: per customer window: count, sum and sum of squares of amounts (transaction included)
    customer_count: dict[int, Any]
    customer_sum: dict[int, Any]
    customer_sumsq: dict[int, Any]
    #: per terminal window: known labels and known frauds
    terminal_count: dict[int, Any]
    terminal_frauds: dict[int, Any]
    #: largest amount in the recent window (transaction included)
    customer_recent_max: Any
    #: count and sum of amounts in the baseline window (t - 60d, t - 14d]
    customer_baseline_count: Any
    customer_baseline_sum: Any
    #: the terminal's latest known label: when it became known (-1: none), and its value
    #: (1 if any transaction of that instant was fraud)
    terminal_last_known_us: Any
    terminal_last_label: Any


class _ArrayOps:
    """What :func:`finalize` needs beyond arithmetic, on arrays (one entry per transaction)."""

    where = staticmethod(np.where)
    sqrt = staticmethod(np.sqrt)

    @staticmethod
    def ints(values: Any) -> Any:
        return np.asarray(values).astype(np.int64, copy=False)

    @staticmethod
    def floats(values: Any) -> Any:
        return np.asarray(values).astype(np.float64)

    @staticmethod
    def ratios(num: list[Any], den: list[Any], default: float) -> Any:
        """num[i] / den[i] pairwise (``default`` where den <= 0), one array per pair (not
        stacked into a matrix first: at a million rows the copies cost more than the
        divisions)."""
        out = []
        for n, d in zip(num, den, strict=True):
            denominator = np.asarray(d, dtype=np.float64)
            ratio = np.full(denominator.shape, default, dtype=np.float64)
            np.divide(np.asarray(n, dtype=np.float64), denominator, out=ratio,
                      where=denominator > 0)
            out.append(ratio)
        return out


class _ScalarOps:
    """The same on Python numbers, for one transaction: a NumPy call on a one-entry array costs
    ~1 us of overhead, and finalize makes ~45 of them. Python floats are IEEE doubles like
    float64, and every operation used is correctly rounded in both, so results are equal
    (tested)."""

    sqrt = staticmethod(math.sqrt)
    ints = staticmethod(int)
    floats = staticmethod(float)

    @staticmethod
    def where(condition: Any, a: Any, b: Any) -> Any:
        return a if condition else b

    @staticmethod
    def ratios(num: list[Any], den: list[Any], default: float) -> list[float]:
        return [float(n) / d if d > 0 else default for n, d in zip(num, den, strict=True)]


def calendar_flags(time_us: Any, ops: Any = _ArrayOps) -> tuple[Any, Any]:
    """(weekend, night) as int64 0/1: weekday >= 5 (Sat, Sun), hour <= 6."""
    days = time_us // US_PER_DAY
    weekday = (days + _EPOCH_WEEKDAY) % 7
    hour = (time_us // US_PER_HOUR) % 24
    return ops.ints(weekday >= 5), ops.ints(hour <= NIGHT_LAST_HOUR)


def finalize(stats: WindowStats, spec: FeatureSpec = DEFAULT_SPEC) -> dict[str, Any]:
    """Features from window statistics: the single definition both executors use. Arrays in,
    arrays out; for one transaction given as Python numbers, Python numbers out."""
    ops: Any = _ArrayOps if isinstance(stats.time_us, np.ndarray) else _ScalarOps
    weekend, night = calendar_flags(stats.time_us, ops)
    out: dict[str, Any] = {
        c.TX_AMOUNT: ops.floats(stats.amount),
        "TX_DURING_WEEKEND": weekend,
        "TX_DURING_NIGHT": night,
    }
    c_win, t_win = spec.customer_windows_days, spec.terminal_windows_days
    n, r = spec.spread_window_days, spec.recent_days
    first = ops.ratios(
        [
            *(stats.customer_sum[w] for w in c_win),
            *(stats.terminal_frauds[w] for w in t_win),
            stats.customer_sumsq[n],
            stats.customer_baseline_sum,
        ],
        [
            *(stats.customer_count[w] for w in c_win),
            *(stats.terminal_count[w] for w in t_win),
            stats.customer_count[n],
            stats.customer_baseline_count,
        ],
        0.0,
    )
    mean = dict(zip(c_win, first[: len(c_win)], strict=True))
    risk = dict(zip(t_win, first[len(c_win) : len(c_win) + len(t_win)], strict=True))
    mean_square, baseline = first[-2], first[-1]
    for w in c_win:
        out[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = ops.ints(stats.customer_count[w])
        out[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = mean[w]
    for w in t_win:
        out[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = ops.ints(stats.terminal_count[w])
        out[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = risk[w]
    second = ops.ratios(
        [*(stats.amount for _ in c_win), stats.customer_recent_max, mean[r]],
        [*(mean[w] for w in c_win), baseline, baseline],
        1.0,
    )
    for w, ratio in zip(c_win, second, strict=False):
        out[f"CUSTOMER_ID_AMOUNT_RATIO_{w}DAY_WINDOW"] = ratio
    # Sums of squares cancel: treat variance below a relative epsilon (and single
    # transactions) as zero spread, where the z-score is defined as 0.
    variance = mean_square - mean[n] * mean[n]
    spread = (stats.customer_count[n] > 1) & (variance > 1e-9 * (mean[n] * mean[n] + 1.0))
    std = ops.sqrt(ops.where(spread, variance, 1.0))
    out[f"CUSTOMER_ID_AMOUNT_ZSCORE_{n}DAY_WINDOW"] = ops.where(
        spread, (stats.amount - mean[n]) / std, 0.0
    )
    out[f"CUSTOMER_ID_MAX_AMOUNT_{r}DAY_RATIO_LAGGED"] = second[-2]
    out[f"CUSTOMER_ID_AVG_AMOUNT_{r}DAY_RATIO_LAGGED"] = second[-1]
    known = stats.terminal_last_known_us >= 0
    out["TERMINAL_ID_LAST_KNOWN_LABEL"] = ops.ints(ops.where(known, stats.terminal_last_label, 0))
    out["TERMINAL_ID_DAYS_SINCE_LAST_KNOWN_LABEL"] = ops.where(
        known,
        (stats.time_us - stats.terminal_last_known_us) / US_PER_DAY,
        float(max(spec.terminal_windows_days)),
    )
    return out


# --------------------------------------------------------------------------------------------
# Batch executor: SQL window functions over the whole history
# --------------------------------------------------------------------------------------------


def to_epoch_us(values: pd.Series | np.ndarray) -> np.ndarray:
    """Naive-UTC datetimes as int64 epoch microseconds."""
    return np.asarray(pd.Series(values).astype("datetime64[us]").to_numpy().astype(np.int64))


def _interval(us: int) -> str:
    return f"INTERVAL '{us} microseconds'"


@dataclasses.dataclass(frozen=True)
class Dialect:
    """What the batch SQL spells differently per engine: only the microseconds of a timestamp.

    Everything else is the same text on DuckDB and Spark SQL (tested on both): RANGE frames
    over a timestamp with ``INTERVAL '<n> microseconds'`` bounds, COALESCE, CAST, window
    aggregates. Timestamps are naive UTC; a Spark session runs with ``spark.sql.session.
    timeZone=UTC`` (:mod:`feature_store.spark`), so both engines read the same instants.
    """

    name: str
    #: SQL of a timestamp's epoch microseconds, ``{}`` standing for the column.
    epoch_us: str

    def micros(self, column: str) -> str:
        return self.epoch_us.format(column)


DUCKDB: Final = Dialect("duckdb", "epoch_us({})")
SPARK: Final = Dialect("spark", "unix_micros({})")


class SqlEngine(Protocol):
    """Runs the batch SQL: named Arrow tables in, the query's result as one Arrow table out."""

    dialect: Dialect

    def query(self, sql: str, tables: Mapping[str, pa.Table]) -> pa.Table: ...


class DuckDBEngine:
    """:class:`SqlEngine` on a DuckDB connection (the default executor)."""

    dialect = DUCKDB

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def query(self, sql: str, tables: Mapping[str, pa.Table]) -> pa.Table:
        for name, table in tables.items():
            self.con.register(name, table)
        try:
            return self.con.sql(sql).to_arrow_table()
        finally:
            for name in tables:
                self.con.unregister(name)


def batch_sql(
    spec: FeatureSpec = DEFAULT_SPEC, table: str = "tx", dialect: Dialect = DUCKDB
) -> str:
    """The window statistics of every transaction of ``table``, as one SQL query.

    ``table`` has columns ``row_idx, cid, term, ts, amount, fraud``; ``dialect`` renders it for
    DuckDB or Spark SQL (:class:`Dialect`). Customer windows ending at the current row
    include all of its RANGE peers, the customer's transactions at the same instant; those that
    come later in arrival order are taken out again with :func:`ties_sql`.
    """
    cust = "PARTITION BY cid ORDER BY ts RANGE BETWEEN {lo} PRECEDING AND {hi}"
    term = "PARTITION BY term ORDER BY ts RANGE BETWEEN {lo} PRECEDING AND {hi} PRECEDING"
    select = []
    for n in spec.customer_windows_days:
        w = cust.format(lo=_interval(n * US_PER_DAY - 1), hi="CURRENT ROW")
        select += [f"COUNT(*) OVER ({w}) AS c_cnt_{n}", f"SUM(amount) OVER ({w}) AS c_sum_{n}"]
        if n == spec.spread_window_days:
            select.append(f"SUM(amount * amount) OVER ({w}) AS c_sq_{n}")
    # the largest amount before the current instant (its peers come from ties_sql)
    w = cust.format(lo=_interval(spec.recent_days * US_PER_DAY - 1), hi=f"{_interval(1)} PRECEDING")
    select.append(f"COALESCE(MAX(amount) OVER ({w}), CAST('-inf' AS DOUBLE)) AS c_max_before")
    start, end = (d * US_PER_DAY for d in spec.baseline_days)
    w = cust.format(lo=_interval(start - 1), hi=f"{_interval(end)} PRECEDING")
    select += [
        f"COUNT(*) OVER ({w}) AS c_base_cnt",
        f"COALESCE(SUM(amount) OVER ({w}), 0) AS c_base_sum",
    ]
    delay = spec.label_delay_us
    for n in spec.terminal_windows_days:
        # labels and frauds in one exact integer sum: labels in the low 32 bits
        w = term.format(lo=_interval(delay + n * US_PER_DAY - 1), hi=_interval(delay))
        packed = f"COALESCE(SUM(1 + fraud * {_PACK}) OVER ({w}), 0)"
        select.append(f"CAST({packed} AS BIGINT) AS t_packed_{n}")
    # Latest known label: the largest (time, label) pair, packed into one number so that
    # among labels of one instant a fraud wins, whatever the row order.
    w = term.format(lo=_interval(delay + spec.terminal_horizon_us - 1), hi=_interval(delay))
    last = f"MAX({dialect.micros('ts')} * 2 + fraud)"
    select.append(f"COALESCE({last} OVER ({w}), -1) AS t_last")
    return f"SELECT row_idx, {', '.join(select)} FROM {table} ORDER BY row_idx"


_PACK: Final = 1 << 32


def ties_sql(table: str = "ties") -> str:
    """Per transaction of ``table`` (one customer's transactions sharing an instant, ``row_idx,
    tid_rank, cid, ts, amount``): what its later peers in arrival order add to the
    peer-inclusive windows of :func:`batch_sql`, and the largest amount among itself and its
    earlier peers.

    Arrival order among peers is TRANSACTION_ID order under :mod:`vigil.ordering`'s rule,
    given as ``tid_rank``, a column computed by that rule in Python (:func:`vigil.ordering.
    id_ranks`) for these rows only: they are few (a customer's transactions sharing an
    instant), and a precomputed integer key keeps the SQL free of any cast or collation.
    An SQL spelling of the rule would depend on each engine's string-to-integer cast
    (DuckDB's ``TRY_CAST`` takes ``'1e3'`` and ``' 5'``, Spark's differs again), so the same
    query runs unchanged on DuckDB and Spark and cannot drift from serving, which sorts with
    :func:`vigil.ordering.id_order_key`. Identical ids (which validation rejects) keep row
    order."""
    peers = "PARTITION BY cid, ts ORDER BY tid_rank, row_idx"
    later = f"{peers} ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING"
    earlier = f"{peers} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    return f"""
SELECT row_idx,
       COUNT(*) OVER ({later}) AS l_cnt,
       COALESCE(SUM(amount) OVER ({later}), 0) AS l_sum,
       COALESCE(SUM(amount * amount) OVER ({later}), 0) AS l_sq,
       MAX(amount) OVER ({earlier}) AS e_max
FROM {table}
"""


def _arrow_strings(values: pd.Series) -> pa.Array:
    array = (
        pa.array(values.array)
        if isinstance(values.dtype, pd.StringDtype)
        else pa.array(values.astype(str).to_numpy(), type=pa.string())
    )
    return array.cast(pa.string())


def _same_instant_rows(cid: np.ndarray, time_us: np.ndarray) -> np.ndarray:
    """Rows (ascending) that share their customer and instant with another row. Only rows whose
    instant some other row shares are candidates: one pass when the input is time-ordered."""
    times, order = _time_sorted(time_us, np.arange(len(time_us)))
    equal = times[1:] == times[:-1]
    shared = np.zeros(len(times), dtype=bool)
    shared[1:] |= equal
    shared[:-1] |= equal
    candidates = np.sort(order[shared])
    pairs = pd.DataFrame({"c": cid[candidates], "t": time_us[candidates]})
    return candidates[pairs.duplicated(keep=False).to_numpy()]


def _columns(table: pa.Table, n_rows: int) -> dict[str, np.ndarray]:
    """The columns of a query result over every row, as NumPy arrays."""
    if table.num_rows != n_rows:
        raise RuntimeError(f"window query returned {table.num_rows} rows for {n_rows}")
    return {name: table.column(name).to_numpy() for name in table.column_names}


#: Batch executors of one machine: ``arrays`` (sorted NumPy arrays, :mod:`feature_store.
#: sorted_windows`; falls back to ``duckdb`` where it declines) and ``duckdb`` (the SQL of
#: :func:`batch_sql`, which Spark runs too).
BATCH_EXECUTORS: Final = ("arrays", "duckdb")


def batch_stats(
    transactions: pd.DataFrame,
    spec: FeatureSpec = DEFAULT_SPEC,
    con: duckdb.DuckDBPyConnection | None = None,
    engine: SqlEngine | None = None,
    *,
    executor: str = "arrays",
) -> WindowStats:
    """Window statistics for every row of ``transactions`` (raw schema), in row order.

    On one machine ``executor`` computes them (``arrays`` by default, see
    :data:`BATCH_EXECUTORS`). Given an ``engine`` (e.g. :class:`feature_store.spark.SparkEngine`)
    the SQL of :func:`batch_sql` runs there instead; ``duckdb`` runs it on ``con`` or a DuckDB
    connection of its own. Everything else is the same for every engine."""
    if c.TX_FRAUD not in transactions.columns:
        raise ValueError(f"batch features need labels ({c.TX_FRAUD}) for the terminal windows")
    if executor not in BATCH_EXECUTORS:
        raise ValueError(f"unknown batch executor {executor!r}; choose from {BATCH_EXECUTORS}")
    n_rows = len(transactions)
    time_us = to_epoch_us(transactions[c.TX_DATETIME])
    amount = transactions[c.TX_AMOUNT].to_numpy(np.float64)
    if executor == "arrays" and engine is None:
        from feature_store.sorted_windows import sorted_stats

        stats = sorted_stats(
            time_us,
            amount,
            transactions[c.TX_FRAUD].to_numpy(np.int64),
            _arrow_strings(transactions[c.CUSTOMER_ID]),
            _arrow_strings(transactions[c.TERMINAL_ID]),
            _arrow_strings(transactions[c.TRANSACTION_ID]),
            spec,
        )
        if stats is not None:
            return stats
    # Entity ids only partition the windows: integer codes sort faster than strings.
    cid = pd.factorize(transactions[c.CUSTOMER_ID])[0].astype(np.int64)
    table = pa.table(
        {
            "row_idx": pa.array(np.arange(n_rows, dtype=np.int64)),
            "cid": pa.array(cid),
            "term": pa.array(pd.factorize(transactions[c.TERMINAL_ID])[0].astype(np.int64)),
            "ts": pa.array(transactions[c.TX_DATETIME].astype("datetime64[us]")),
            "amount": pa.array(amount),
            "fraud": pa.array(transactions[c.TX_FRAUD].to_numpy(np.int64)),
        }
    )
    tied = _same_instant_rows(cid, time_us)
    own = engine is None and con is None
    if engine is None:
        import duckdb

        con = con or duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        engine = DuckDBEngine(con)
    try:
        sql = batch_sql(spec, dialect=engine.dialect)
        result = _columns(engine.query(sql, {"tx": table}), n_rows)
        if len(tied):
            tid_rank = id_ranks(_arrow_strings(transactions[c.TRANSACTION_ID]).take(tied))
            ties = table.take(tied).append_column("tid_rank", pa.array(tid_rank))
            peers = _columns(engine.query(ties_sql(), {"ties": ties}), len(tied))
    finally:
        if own and con is not None:
            con.close()

    def col(name: str, dtype: type) -> np.ndarray:
        return np.array(result[name], dtype=dtype)

    recent_max = np.maximum(col("c_max_before", np.float64), amount)
    count = {n: col(f"c_cnt_{n}", np.int64) for n in spec.customer_windows_days}
    total = {n: col(f"c_sum_{n}", np.float64) for n in spec.customer_windows_days}
    spread = spec.spread_window_days
    squares = {spread: col(f"c_sq_{spread}", np.float64)}
    if len(tied):  # take the later same-instant peers out again
        rows = np.asarray(peers["row_idx"])
        for n in spec.customer_windows_days:
            count[n][rows] -= np.asarray(peers["l_cnt"], np.int64)
            total[n][rows] -= np.asarray(peers["l_sum"], np.float64)
        squares[spread][rows] -= np.asarray(peers["l_sq"], np.float64)
        recent_max[rows] = np.maximum(
            col("c_max_before", np.float64)[rows], np.asarray(peers["e_max"], np.float64)
        )
    last = col("t_last", np.int64)  # (time of the latest known label) * 2 + label, -1: none
    packed = {n: col(f"t_packed_{n}", np.int64) for n in spec.terminal_windows_days}
    return WindowStats(
        time_us=time_us,
        amount=amount,
        customer_count=count,
        customer_sum=total,
        customer_sumsq=squares,
        terminal_count={n: packed[n] % _PACK for n in spec.terminal_windows_days},
        terminal_frauds={n: packed[n] // _PACK for n in spec.terminal_windows_days},
        customer_recent_max=recent_max,
        customer_baseline_count=col("c_base_cnt", np.int64),
        customer_baseline_sum=col("c_base_sum", np.float64),
        terminal_last_known_us=np.where(last >= 0, last // 2 + spec.label_delay_us, -1),
        terminal_last_label=np.where(last >= 0, last % 2, 0),
    )


def batch_features(
    transactions: pd.DataFrame,
    spec: FeatureSpec = DEFAULT_SPEC,
    con: duckdb.DuckDBPyConnection | None = None,
    engine: SqlEngine | None = None,
    *,
    executor: str = "arrays",
) -> pd.DataFrame:
    """Features of every transaction, one row per transaction in input order.

    Columns: TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, the features of ``spec``
    (handbook names first), and TX_FRAUD when the input has it.
    """
    features = finalize(batch_stats(transactions, spec, con, engine, executor=executor), spec)
    out = pd.DataFrame({k: transactions[k].reset_index(drop=True) for k in c.KEY_COLUMNS})
    for name in spec.features:
        out[name] = features[name]
    if c.TX_FRAUD in transactions.columns:
        out[c.TX_FRAUD] = transactions[c.TX_FRAUD].to_numpy()
    return out


# --------------------------------------------------------------------------------------------
# Online executor: NumPy over the histories kept in the online store
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CustomerHistory:
    """A customer's recent transactions, in arrival order."""

    time_us: np.ndarray  # int64
    amount: np.ndarray  # float64
    transaction_id: list[str]

    @classmethod
    def empty(cls) -> CustomerHistory:
        return cls(np.empty(0, np.int64), np.empty(0, np.float64), [])

    def append(self, time_us: int, amount: float, transaction_id: str) -> CustomerHistory:
        return CustomerHistory(
            np.append(self.time_us, np.int64(time_us)),
            np.append(self.amount, np.float64(amount)),
            [*self.transaction_id, transaction_id],
        )


@dataclasses.dataclass
class TerminalHistory:
    """A terminal's labels with the time each becomes known (transaction time + delay)."""

    available_us: np.ndarray  # int64
    fraud: np.ndarray  # int64 0/1

    @classmethod
    def empty(cls) -> TerminalHistory:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64))


@dataclasses.dataclass(frozen=True)
class OnlineRequest:
    transaction_id: str
    time_us: int
    customer_id: str
    terminal_id: str
    amount: float


def online_requests(transactions: pd.DataFrame) -> list[OnlineRequest]:
    """Scoring requests for the rows of a raw-transactions frame, in its row order."""
    return [
        OnlineRequest(str(t), int(u), str(cu), str(te), float(a))
        for t, u, cu, te, a in zip(
            transactions[c.TRANSACTION_ID],
            to_epoch_us(transactions[c.TX_DATETIME]),
            transactions[c.CUSTOMER_ID],
            transactions[c.TERMINAL_ID],
            transactions[c.TX_AMOUNT],
            strict=True,
        )
    ]


def _time_sorted(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays ordered by time (stable: same-instant events keep their order)."""
    if len(times) < 2 or bool(np.all(times[1:] >= times[:-1])):
        return times, values
    order = np.argsort(times, kind="stable")
    return times[order], values[order]


def _request_stats(
    req: OnlineRequest, ch: CustomerHistory, th: TerminalHistory, spec: FeatureSpec
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """One request's window statistics as Python numbers: (ints, floats), in the order
    :func:`online_stats` unpacks them."""
    t, amount = req.time_us, req.amount
    n_c = len(spec.customer_windows_days)
    # customer: one sorted pass; sums as differences of prefix sums (Python numbers from here:
    # indexing a NumPy array gives NumPy scalars, which are slower to compute with)
    times, amounts = _time_sorted(ch.time_us, ch.amount)
    edges = np.searchsorted(times, t - spec.customer_offsets_us, side="right").tolist()
    seen = edges[-1]  # events at or before t
    prefix = np.empty(len(amounts) + 1)
    prefix[0] = 0.0
    np.cumsum(amounts, out=prefix[1:])
    sums = prefix.take(edges).tolist()
    spread_lo = edges[spec.customer_windows_days.index(spec.spread_window_days)]
    window = amounts[spread_lo:seen]
    recent = amounts[edges[n_c] : seen]
    recent_max = max(amount, float(recent.max())) if len(recent) else amount
    # terminal: labels sorted by the time they become known
    available, fraud = _time_sorted(th.available_us, th.fraud)
    t_edges = np.searchsorted(available, t - spec.terminal_offsets_us, side="right").tolist()
    known = t_edges[-1]
    frauds = np.empty(len(fraud) + 1, np.int64)
    frauds[0] = 0
    np.cumsum(fraud, out=frauds[1:])
    fraud_sums = frauds.take(t_edges).tolist()
    last_known, last_label = -1, 0
    if known > t_edges[-2]:  # a label known within the horizon: the latest instant's
        last_known = int(available[known - 1])
        first = int(np.searchsorted(available, last_known, side="left"))
        last_label = int(fraud[first:known].max())
    n_t = len(spec.terminal_windows_days)
    ints = (
        t,
        *(seen - lo + 1 for lo in edges[:n_c]),
        *(known - lo for lo in t_edges[:n_t]),
        *(fraud_sums[-1] - f for f in fraud_sums[:n_t]),
        edges[n_c + 2] - edges[n_c + 1],
        last_known,
        last_label,
    )
    floats = (
        amount,
        *(sums[-1] - lo + amount for lo in sums[:n_c]),
        float(window @ window) + amount**2,
        recent_max,
        sums[n_c + 2] - sums[n_c + 1],
    )
    return ints, floats


def online_stats(
    requests: Sequence[OnlineRequest],
    customers: Sequence[CustomerHistory],
    terminals: Sequence[TerminalHistory],
    spec: FeatureSpec = DEFAULT_SPEC,
) -> WindowStats:
    """Window statistics for requests, given each request's customer and terminal history;
    for a single request as Python numbers (see :class:`WindowStats`).

    Histories are as of before the request; a customer event with a later time (a request that
    arrived late) is not counted, like in batch.
    """
    rows = [
        _request_stats(req, ch, th, spec)
        for req, ch, th in zip(requests, customers, terminals, strict=True)
    ]
    c_win, t_win = spec.customer_windows_days, spec.terminal_windows_days
    n_c, n_t = len(c_win), len(t_win)
    ints: Any
    floats: Any
    if len(rows) == 1:
        ints, floats = rows[0]
    else:  # one row per statistic
        ints = np.array([r[0] for r in rows], np.int64).reshape(-1, 4 + n_c + 2 * n_t).T.copy()
        floats = np.array([r[1] for r in rows], np.float64).reshape(-1, 4 + n_c).T.copy()
    return WindowStats(
        time_us=ints[0],
        amount=floats[0],
        customer_count=dict(zip(c_win, ints[1 : 1 + n_c], strict=True)),
        customer_sum=dict(zip(c_win, floats[1 : 1 + n_c], strict=True)),
        customer_sumsq={spec.spread_window_days: floats[1 + n_c]},
        terminal_count=dict(zip(t_win, ints[1 + n_c : 1 + n_c + n_t], strict=True)),
        terminal_frauds=dict(zip(t_win, ints[1 + n_c + n_t : 1 + n_c + 2 * n_t], strict=True)),
        customer_recent_max=floats[2 + n_c],
        customer_baseline_count=ints[1 + n_c + 2 * n_t],
        customer_baseline_sum=floats[3 + n_c],
        terminal_last_known_us=ints[2 + n_c + 2 * n_t],
        terminal_last_label=ints[3 + n_c + 2 * n_t],
    )


def online_features(
    requests: Sequence[OnlineRequest],
    customers: Sequence[CustomerHistory],
    terminals: Sequence[TerminalHistory],
    spec: FeatureSpec = DEFAULT_SPEC,
) -> dict[str, np.ndarray]:
    """Features of scoring requests, computed exactly like :func:`batch_features`: one array
    entry per request."""
    features = finalize(online_stats(requests, customers, terminals, spec), spec)
    if len(requests) == 1:
        return {name: np.array([value]) for name, value in features.items()}
    return features


def feature_matrix(features: dict[str, np.ndarray], spec: FeatureSpec = DEFAULT_SPEC) -> np.ndarray:
    """Features as a float64 matrix in model order."""
    return np.column_stack([np.asarray(features[n], dtype=np.float64) for n in spec.features])
