"""The sorted-arrays batch executor: its parts, where it declines, and agreement with the SQL
executor on inputs the brute-force tests do not reach (many entities, far-apart times)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from feature_store import sorted_windows
from feature_store.transforms import DEFAULT_SPEC, batch_features, batch_stats
from vigil import contract as c

pytestmark = pytest.mark.unit


def test_range_max_equals_a_loop() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=5000)
    hi = rng.integers(1, len(values) + 1, size=3000)
    lo = hi - rng.integers(1, 300, size=len(hi)).clip(max=hi)
    expected = [values[a:b].max() for a, b in zip(lo, hi, strict=True)]
    assert sorted_windows._range_max(values, lo, hi).tolist() == expected


def _random_transactions(n: int, customers: int, days: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2018-04-01").value // 1000
    time_us = start + rng.integers(0, int(days * 86_400) + 1, size=n) * 1_000_000
    return pd.DataFrame({
        c.TRANSACTION_ID: pd.array(rng.permutation(n).astype(str), dtype="string[pyarrow]"),
        c.TX_DATETIME: pd.to_datetime(time_us, unit="us").astype("datetime64[us]"),
        c.CUSTOMER_ID: pd.array(rng.integers(0, customers, n).astype(str),
                                dtype="string[pyarrow]"),
        c.TERMINAL_ID: pd.array(rng.integers(0, 50, n).astype(str), dtype="string[pyarrow]"),
        c.TX_AMOUNT: rng.uniform(0, 200, n).round(2),
        c.TX_FRAUD: (rng.uniform(size=n) < 0.1).astype(np.int8),
    })


def _assert_executors_agree(tx: pd.DataFrame) -> None:
    arrays, sql = (batch_features(tx, executor=e) for e in ("arrays", "duckdb"))
    for name in DEFAULT_SPEC.features:
        np.testing.assert_allclose(arrays[name].to_numpy(np.float64),
                                   sql[name].to_numpy(np.float64), rtol=1e-9, atol=1e-9,
                                   err_msg=name)


def test_more_customers_than_16_bit_codes() -> None:
    """Over 65,536 customers: the sort by customer code is no longer on 16-bit codes."""
    _assert_executors_agree(_random_transactions(90_000, 70_000, days=20, seed=2))


def test_declines_keys_that_would_overflow_and_sql_runs_instead() -> None:
    """3,000 customers over 200 years: customer * time span overflows int64."""
    tx = _random_transactions(9000, 3000, days=200 * 365, seed=3)
    spec = DEFAULT_SPEC
    stats = sorted_windows.sorted_stats(
        np.asarray(tx[c.TX_DATETIME].astype("int64")),
        tx[c.TX_AMOUNT].to_numpy(),
        tx[c.TX_FRAUD].to_numpy(np.int64),
        pa.array(tx[c.CUSTOMER_ID].array),
        pa.array(tx[c.TERMINAL_ID].array),
        pa.array(tx[c.TRANSACTION_ID].array),
        spec,
    )
    assert stats is None
    assert batch_stats(tx, executor="arrays").customer_count[1].tolist() == (
        batch_stats(tx, executor="duckdb").customer_count[1].tolist()
    )
    _assert_executors_agree(tx)


def test_same_instant_bursts_and_shuffled_rows() -> None:
    """Times on an hourly grid: many customers' transactions share instants."""
    tx = _random_transactions(20_000, 100, days=30, seed=4)
    tx[c.TX_DATETIME] = tx[c.TX_DATETIME].dt.floor("h")
    assert tx.duplicated([c.CUSTOMER_ID, c.TX_DATETIME]).sum() > 500
    _assert_executors_agree(tx)


def test_unknown_executor_is_named() -> None:
    tx = _random_transactions(10, 3, days=1, seed=5)
    with pytest.raises(ValueError, match="unknown batch executor 'spark-ish'"):
        batch_features(tx, executor="spark-ish")
