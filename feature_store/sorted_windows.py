"""Batch window statistics on one machine from sorted arrays: the executor `vigil featurize`
runs by default.

It computes the :class:`~feature_store.transforms.WindowStats` of the one feature definition
(:class:`~feature_store.transforms.FeatureSpec` windows, :func:`~feature_store.transforms.
finalize`) like the SQL executor (:func:`~feature_store.transforms.batch_sql`, which DuckDB and
Spark run), with NumPy instead of window functions:

* rows are sorted once per entity by ``(entity, time)``, customers' same-instant rows by
  arrival order (ids under :mod:`vigil.ordering`'s rule), so that a customer window ending at
  a row is a contiguous range ``[lo, row]`` and ties need no correction afterwards;
* window edges are binary searches (``searchsorted``) of ``t - edge`` in a sorted int64 key
  ``entity * span + time``;
* counts are differences of positions; sums are differences of prefix sums that restart at
  every entity, kept in extended precision (x86's 80-bit ``long double``), so a difference
  is about as exact as summing the window itself; squares are rounded to double first, as
  SQL's ``SUM(amount * amount)`` rounds them; fraud counts are integer prefix sums, exact;
* the largest amount of a window is a sparse-table range maximum, one doubling level at a time;
* customer and terminal windows run on two threads.

It declines (returns None) what it cannot do exactly, and the SQL executor runs instead:
a platform whose ``long double`` is a plain double, or keys that would overflow int64 (more
than ~400K customers over a year of data).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_store.transforms import US_PER_DAY, FeatureSpec, WindowStats
from vigil.ordering import id_ranks

#: Prefix sums need a wider mantissa than float64's 52 bits to keep window sums exact to 1e-9.
EXTENDED: Final = np.longdouble
_EXTENDED_OK: Final = np.finfo(EXTENDED).nmant >= 63
_INT64_LIMIT: Final = (1 << 63) - 1


def _array(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    return ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids


def entity_codes(ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """Dense integer codes of entity ids (any order) and their count."""
    encoded = pc.dictionary_encode(_array(ids))
    return np.asarray(encoded.indices, dtype=np.int64), len(encoded.dictionary)


def _keys(codes: np.ndarray, n_codes: int, time_us: np.ndarray, reach_us: int) -> np.ndarray | None:
    """``code * span + (time - first + reach)``: sorted by (entity, time), and ``key - d`` for
    any ``d <= reach`` stays inside the entity's own block. None if int64 would overflow."""
    first, last = int(time_us.min()), int(time_us.max())
    span = last - first + reach_us + 1
    if n_codes * span > _INT64_LIMIT:
        return None
    return codes * span + (time_us - (first - reach_us))


def _entity_order(codes: np.ndarray, time_order: np.ndarray) -> np.ndarray:
    """Positions sorted by (entity, time), stable: rows of one entity at one instant keep the
    order of ``time_order`` (positions sorted by time, stable)."""
    small = codes.astype(np.uint16) if codes.max(initial=0) < 1 << 16 else codes
    # a stable sort of small integers is a radix sort: linear
    return time_order[np.argsort(small[time_order], kind="stable")]


def _arrival_order(
    order: np.ndarray, keys: np.ndarray, transaction_ids: pa.Array | pa.ChunkedArray
) -> None:
    """Reorder, in place, runs of ``order`` sharing a key (one customer, one instant) by
    transaction id under :mod:`vigil.ordering`'s rule (ids are ranked for these rows only)."""
    equal = keys[1:] == keys[:-1]
    if not equal.any():
        return
    shared = np.zeros(len(keys), dtype=bool)
    shared[1:] |= equal
    shared[:-1] |= equal
    where = np.flatnonzero(shared)  # whole runs, ascending
    rows = order[where]
    ranks = id_ranks(_array(transaction_ids).take(pa.array(rows)))
    # by key, then id rank, then input row (identical ids, which validation rejects)
    order[where] = rows[np.lexsort((rows, ranks, keys[where]))]


def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Values given in ``order`` (sorted positions), back in row order."""
    out: np.ndarray = np.empty_like(values)
    out[order] = values
    return out


def _prefix(values: np.ndarray, dtype: type) -> np.ndarray:
    out: np.ndarray = np.zeros(len(values) + 1, dtype=dtype)
    np.cumsum(values, dtype=dtype, out=out[1:])
    return out


class _BlockSums:
    """Sums over ranges ``[lo, hi)`` of sorted values, each range inside one entity's block,
    as differences of prefix sums that restart at every block: a slot before each block takes
    the previous block's total out again, so a prefix sum is about as large as its own entity's
    total (a prefix sum over all rows would grow with the whole data set, and so would the
    rounding error of every difference). Extended precision on top."""

    def __init__(self, values: np.ndarray, block_start: np.ndarray) -> None:
        starts = np.flatnonzero(block_start)
        #: per row: its block, which is also how far its slot is shifted in ``_prefix``
        self.block = np.cumsum(block_start) - 1
        wide = values.astype(EXTENDED)
        slots = np.empty(len(values) + len(starts), dtype=EXTENDED)
        slots[np.arange(len(values)) + self.block + 1] = wide
        totals = np.add.reduceat(wide, starts) if len(starts) else np.zeros(0, EXTENDED)
        slots[starts + np.arange(len(starts))] = -np.concatenate((np.zeros(1, EXTENDED),
                                                                  totals[:-1]))
        self._prefix = np.cumsum(slots)
        self._row_end: np.ndarray | None = None

    def between(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Per row (sorted order): the sum of values[lo:hi] (a range of the row's block)."""
        return (self._prefix[hi + self.block] - self._prefix[lo + self.block]).astype(np.float64)

    def up_to_row(self, lo: np.ndarray) -> np.ndarray:
        """Per row: the sum of values[lo:row + 1]."""
        if self._row_end is None:
            self._row_end = self._prefix[np.arange(1, len(self.block) + 1) + self.block]
        return (self._row_end - self._prefix[lo + self.block]).astype(np.float64)


def _range_max(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(values[lo[i]:hi[i]]) for non-empty ranges: a sparse table built one level at a time
    (O(n log longest range) time, O(n) memory)."""
    level = np.frexp(hi - lo)[1].astype(np.int64) - 1  # floor(log2(length)), exactly
    out = np.empty(len(lo), dtype=values.dtype)
    table = values
    for k in range(int(level.max(initial=0)) + 1):
        if k:
            half = 1 << (k - 1)
            table = np.maximum(table[:-half], table[half:])
        rows = np.flatnonzero(level == k)
        if len(rows):
            out[rows] = np.maximum(table[lo[rows]], table[hi[rows] - (1 << k)])
    return out


def _customer_stats(
    time_us: np.ndarray,
    amount: np.ndarray,
    customer_ids: pa.Array,
    transaction_ids: pa.Array,
    time_order: np.ndarray,
    spec: FeatureSpec,
) -> dict[str, Any] | None:
    """Customer windows: a window ending at a row is the range [lo, row] of rows sorted by
    (customer, time, arrival order)."""
    cid, n_cid = entity_codes(customer_ids)
    keys = _keys(cid, n_cid, time_us, spec.customer_horizon_us)
    if keys is None:
        return None
    order = _entity_order(cid, time_order)
    key = keys[order]
    _arrival_order(order, key, transaction_ids)
    amounts = amount[order]
    sorted_cid = cid[order]
    block_start = np.concatenate(([True], sorted_cid[1:] != sorted_cid[:-1]))
    sums = _BlockSums(amounts, block_start)
    end = np.arange(1, len(key) + 1)  # windows end at (and include) their row
    edges: dict[int, np.ndarray] = {}

    def lo_of(offset_us: int) -> np.ndarray:
        """First sorted position of the customer's window (t - offset, ...]."""
        if offset_us not in edges:
            edges[offset_us] = np.searchsorted(key, key - offset_us, side="right")
        return edges[offset_us]

    out: dict[str, Any] = {"count": {}, "sum": {}, "sumsq": {}}
    for n in spec.customer_windows_days:
        lo = lo_of(n * US_PER_DAY)
        out["count"][n] = _unsort(end - lo, order)
        out["sum"][n] = _unsort(sums.up_to_row(lo), order)
        if n == spec.spread_window_days:
            # squares rounded to double, as SQL's SUM(amount * amount) and serving take them
            squares = _BlockSums(amounts * amounts, block_start)
            out["sumsq"][n] = _unsort(squares.up_to_row(lo), order)
    recent_lo = lo_of(spec.recent_days * US_PER_DAY)
    out["recent_max"] = _unsort(_range_max(amounts, recent_lo, end), order)
    first, last = (lo_of(d * US_PER_DAY) for d in spec.baseline_days)
    out["baseline_count"] = _unsort(last - first, order)
    out["baseline_sum"] = _unsort(sums.between(first, last), order)
    return out


def _terminal_stats(
    time_us: np.ndarray,
    fraud: np.ndarray,
    terminal_ids: pa.Array,
    time_order: np.ndarray,
    spec: FeatureSpec,
) -> dict[str, Any] | None:
    """Terminal windows: the labels known at t are the terminal's rows in (t - delay - n,
    t - delay], a range of rows sorted by (terminal, time)."""
    term, n_term = entity_codes(terminal_ids)
    delay = spec.label_delay_us
    keys = _keys(term, n_term, time_us, delay + spec.terminal_horizon_us)
    if keys is None:
        return None
    order = _entity_order(term, time_order)
    key = keys[order]
    labels = fraud[order].astype(np.int64)
    frauds = _prefix(labels, np.int64)
    edges: dict[int, np.ndarray] = {}

    def known_before(offset_us: int) -> np.ndarray:
        """End of the terminal's rows at or before t - offset, in sorted positions."""
        if offset_us not in edges:
            edges[offset_us] = np.searchsorted(key, key - offset_us, side="right")
        return edges[offset_us]

    known_end = known_before(delay)
    out: dict[str, Any] = {"count": {}, "frauds": {}}
    for n in spec.terminal_windows_days:
        lo = known_before(delay + n * US_PER_DAY)
        out["count"][n] = _unsort(known_end - lo, order)
        out["frauds"][n] = _unsort(frauds[known_end] - frauds[lo], order)
    # the latest known label: the last row at or before t - delay, within the horizon; among
    # the terminal's rows at that instant a fraud wins
    known = known_end > known_before(delay + spec.terminal_horizon_us)
    run_start = np.concatenate(([True], key[1:] != key[:-1]))
    run_fraud = np.maximum.reduceat(labels, np.flatnonzero(run_start))
    run_of = np.cumsum(run_start) - 1
    last = np.maximum(known_end - 1, 0)
    out["last_known"] = _unsort(np.where(known, time_us[order[last]] + delay, -1), order)
    out["last_label"] = _unsort(np.where(known, run_fraud[run_of[last]], 0), order)
    return out


def sorted_stats(
    time_us: np.ndarray,
    amount: np.ndarray,
    fraud: np.ndarray,
    customer_ids: pa.Array | pa.ChunkedArray,
    terminal_ids: pa.Array | pa.ChunkedArray,
    transaction_ids: pa.Array | pa.ChunkedArray,
    spec: FeatureSpec,
) -> WindowStats | None:
    """Window statistics of every row (in row order), or None where this executor declines
    (see the module's docstring). Customer and terminal windows are computed on two threads
    (NumPy and Arrow release the GIL in the work that counts)."""
    if not _EXTENDED_OK or len(time_us) == 0:
        return None
    if bool(np.all(time_us[1:] >= time_us[:-1])):  # daily files: usually in time order already
        time_order = np.arange(len(time_us))
    else:
        time_order = np.argsort(time_us, kind="stable")
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="windows") as pool:
        terminals = pool.submit(
            _terminal_stats, time_us, fraud, _array(terminal_ids), time_order, spec
        )
        customers = _customer_stats(
            time_us, amount, _array(customer_ids), _array(transaction_ids), time_order, spec
        )
        terminal = terminals.result()
    if customers is None or terminal is None:
        return None
    return WindowStats(
        time_us=time_us,
        amount=amount,
        customer_count=customers["count"],
        customer_sum=customers["sum"],
        customer_sumsq=customers["sumsq"],
        terminal_count=terminal["count"],
        terminal_frauds=terminal["frauds"],
        customer_recent_max=customers["recent_max"],
        customer_baseline_count=customers["baseline_count"],
        customer_baseline_sum=customers["baseline_sum"],
        terminal_last_known_us=terminal["last_known"],
        terminal_last_label=terminal["last_label"],
    )
