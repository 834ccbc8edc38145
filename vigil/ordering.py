"""Event order of transactions at the same instant: the one rule, for batch, offline and serving.

Transactions of one customer at the same instant count in arrival order; every executor
reproduces it as ``(TX_DATETIME, TRANSACTION_ID)`` order, with ids compared by this rule:

* an id is *numeric* iff it is ASCII digits with an optional sign (``[+-]?[0-9]+``, nothing
  else: no spaces, exponents, underscores or other scripts' digits) and its value fits int64;
* numeric ids order by value and come before all other ids;
* ids of equal value (``'7'``, ``'007'``, ``'+7'``) and non-numeric ids order by text, in
  code-point order (which is UTF-8 byte order: how Arrow, DuckDB and Spark compare strings).

So ``-5 < +5 < 007 < 7 < 1234567890123456789 < 1e3 < 9223372036854775808 < abc``: the 19-digit
id is an int64, ``1e3`` and ``9223372036854775808`` (2^63, one past int64) are text.

:func:`id_order_key` is the rule on one id (serving sorts a request batch with it);
:func:`id_ranks` computes it for a column of ids with Arrow and NumPy (batch and offline),
property-tested equal to sorting by :func:`id_order_key`; :func:`event_order` orders rows by
time, then id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vigil.contract import TRANSACTION_ID
from vigil.errors import DataError

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
#: Digits of the largest int64: a longer run of digits (leading zeros aside) cannot fit.
_INT64_DIGITS: Final = 19
_NUMERIC = re.compile(r"[+-]?[0-9]+")  # used with fullmatch: no trailing newline slips through
#: The same pattern for Arrow (RE2: ``$`` is the end of the text, never before a newline).
_NUMERIC_RE2: Final = r"^[+-]?[0-9]+$"


def numeric_value(transaction_id: str) -> int | None:
    """The id's int64 value when it is numeric under the rule, else None."""
    if _NUMERIC.fullmatch(transaction_id) is None:
        return None
    # int() refuses very long digit strings (CPython's int_max_str_digits): decide by length
    if len(transaction_id.lstrip("+-").lstrip("0")) > _INT64_DIGITS:
        return None
    value = int(transaction_id)
    return value if INT64_MIN <= value <= INT64_MAX else None


def id_order_key(transaction_id: str) -> tuple[int, int, str]:
    """Sort key of an id under the rule: numeric ids by value then text, before all others
    by text."""
    value = numeric_value(transaction_id)
    if value is None:
        return (1, 0, transaction_id)
    return (0, value, transaction_id)


def _strings(ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> pa.Array:
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if not isinstance(ids, pa.Array):
        ids = pa.array(ids, type=pa.string())
    if ids.null_count:
        raise DataError(f"{ids.null_count} missing id(s): ids must not be null",
                        column=TRANSACTION_ID)
    return ids.cast(pa.string())


def _numeric_values(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per id: numeric under the rule, and its value (0 where not numeric)."""
    numeric = np.asarray(pc.match_substring_regex(ids, _NUMERIC_RE2), dtype=bool)
    values = np.zeros(len(ids), dtype=np.int64)
    if not numeric.any():
        return numeric, values
    candidates = ids.filter(pa.array(numeric))
    try:
        # Arrow's cast refuses a leading '+' (and would take '0x10', which the regex excluded)
        unsigned = pc.replace_substring_regex(candidates, r"^\+", "")
        values[numeric] = pc.cast(unsigned, pa.int64()).to_numpy()
    except pa.ArrowInvalid:  # some overflow int64: they are text, decided one by one
        parsed = [numeric_value(s) for s in candidates.to_pylist()]
        fits = np.array([v is not None for v in parsed], dtype=bool)
        where = np.flatnonzero(numeric)
        values[where[fits]] = [v for v in parsed if v is not None]
        numeric[where[~fits]] = False
    return numeric, values


def id_ranks(ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """Dense int64 ranks of ``ids`` under the rule: ``rank[i] < rank[j]`` iff id i orders
    before id j, equal ids share a rank. Vectorized (Arrow's RE2 and cast, NumPy sorts)."""
    array = _strings(ids)
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    numeric, values = _numeric_values(array)
    # Arrow compares strings by their UTF-8 bytes: code-point order, as Python compares str
    text = np.asarray(pc.rank(array, sort_keys="ascending", tiebreaker="dense"), dtype=np.int64)
    order = np.lexsort((text, values, ~numeric))
    # equal text means equal id, hence equal (class, value): a new rank wherever text changes
    sorted_text = text[order]
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.concatenate(([0], np.cumsum(sorted_text[1:] != sorted_text[:-1])))
    return ranks


def event_order(time_us: np.ndarray, ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """Positions of rows in event order: by time, then by id under the rule. Ids are ranked
    only among rows that share their instant with another row (usually few)."""
    time_us = np.asarray(time_us, dtype=np.int64)
    order = np.argsort(time_us, kind="stable")
    times = time_us[order]
    shared = np.zeros(len(times), dtype=bool)
    equal = times[1:] == times[:-1]
    shared[1:] |= equal
    shared[:-1] |= equal
    if not shared.any():
        return order
    tied = np.sort(order[shared])
    rank = np.zeros(len(time_us), dtype=np.int64)
    rank[tied] = id_ranks(_strings(ids).take(pa.array(tied)))
    return np.lexsort((rank, time_us))
