"""The benchmark's stock pandas side computes the same 15 baseline features as the brute-force
reference, so that `bench/features.py` compares two implementations of the same numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_features_exact import _as_raw, brute_force

from bench.features import pandas_features
from feature_store.transforms import DEFAULT_SPEC, FeatureSpec
from vigil import contract as c
from vigil.data.simulate import SimulationConfig, simulate

pytestmark = pytest.mark.unit


def assert_baseline_equal(stock: pd.DataFrame, expected: pd.DataFrame, spec: FeatureSpec) -> None:
    assert list(stock.columns) == [c.TRANSACTION_ID, *spec.baseline_features]
    stock = stock.set_index(stock[c.TRANSACTION_ID].astype(str)).loc[expected[c.TRANSACTION_ID]]
    for name in spec.baseline_features:
        np.testing.assert_allclose(
            stock[name].to_numpy(np.float64),
            expected[name].to_numpy(np.float64),
            rtol=1e-9,
            atol=1e-9,
            err_msg=name,
        )


def test_stock_pandas_matches_brute_force() -> None:
    sim = simulate(SimulationConfig(n_customers=40, n_terminals=30, n_days=45, radius=30, seed=3))
    tx = sim.transactions  # integer ids, as pd.read_parquet gives them
    assert len(tx) > 1500 and tx[c.TX_FRAUD].sum() > 20
    stock = pandas_features(tx)
    assert stock[c.TRANSACTION_ID].tolist() == tx[c.TRANSACTION_ID].tolist()  # input order
    assert_baseline_equal(stock, brute_force(_as_raw(tx)), DEFAULT_SPEC)


def test_stock_pandas_counts_ties_in_id_order_in_shuffled_rows() -> None:
    """Times floored to the hour, rows shuffled: same-instant transactions count in id order,
    as Vigil and the reference do."""
    sim = simulate(SimulationConfig(n_customers=15, n_terminals=10, n_days=40, radius=30, seed=5))
    tx = sim.transactions.copy()
    tx[c.TX_DATETIME] = tx[c.TX_DATETIME].dt.floor("h")
    tx = tx.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert tx.duplicated([c.CUSTOMER_ID, c.TX_DATETIME], keep=False).sum() > 50
    assert_baseline_equal(pandas_features(tx), brute_force(_as_raw(tx)), DEFAULT_SPEC)


def test_stock_pandas_other_windows_and_delay() -> None:
    spec = FeatureSpec(customer_windows_days=(2, 3), terminal_windows_days=(5,),
                       label_delay_days=2, recent_days=2, baseline_days=(9, 4))
    sim = simulate(SimulationConfig(n_customers=20, n_terminals=10, n_days=20, radius=40, seed=5))
    tx = sim.transactions
    assert_baseline_equal(pandas_features(tx, spec), brute_force(_as_raw(tx), spec), spec)
