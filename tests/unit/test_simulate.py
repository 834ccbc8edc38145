"""The simulator against the handbook's generative process, using its own ground truth."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from vigil import contract as c
from vigil.data.ingest import read_transactions
from vigil.data.simulate import Simulation, SimulationConfig, simulate, write_daily
from vigil.errors import VigilError
from vigil_cli.cli import cli

pytestmark = pytest.mark.unit

# The handbook's facts, written out so that a changed constant in the simulator fails a test.
SCENARIO_1_AMOUNT = 220.0
TERMINAL_COMPROMISE_DAYS = 28
CUSTOMER_COMPROMISE_DAYS = 14
SCENARIO_3_FACTOR = 5


def _in_windows(
    tx: pd.DataFrame, windows: pd.DataFrame, key: str, length: int
) -> pd.Series:
    """For every transaction: is it inside some window (``START_DAY <= day < +length``) of its
    ``key`` (terminal or customer)?"""
    rows = tx[[key, c.TX_TIME_DAYS]].reset_index(names="row")
    pairs = rows.merge(windows, on=key)
    inside = (pairs[c.TX_TIME_DAYS] >= pairs["START_DAY"]) & (
        pairs[c.TX_TIME_DAYS] < pairs["START_DAY"] + length
    )
    hit = pairs.loc[inside, "row"].unique()
    return pd.Series(np.isin(np.arange(len(tx)), hit), index=tx.index)


def test_same_seed_gives_identical_data(small_simulation: Simulation) -> None:
    again = simulate(small_simulation.config)
    pd.testing.assert_frame_equal(again.transactions, small_simulation.transactions)
    pd.testing.assert_frame_equal(
        again.compromised_terminals, small_simulation.compromised_terminals
    )
    pd.testing.assert_frame_equal(
        again.compromised_customers, small_simulation.compromised_customers
    )
    np.testing.assert_array_equal(again.base_amount_cents, small_simulation.base_amount_cents)


def test_different_seed_gives_different_data(small_simulation: Simulation) -> None:
    config = small_simulation.config
    other = simulate(dataclasses.replace(config, seed=config.seed + 1))
    assert not other.transactions.equals(small_simulation.transactions)
    assert not other.customers.equals(small_simulation.customers)


def test_schema_and_dtypes(small_simulation: Simulation) -> None:
    tx = small_simulation.transactions
    assert tuple(tx.columns) == c.RAW_COLUMNS
    assert {col: str(dtype) for col, dtype in tx.dtypes.items()} == {
        c.TRANSACTION_ID: "int64",
        c.TX_DATETIME: "datetime64[us]",
        c.CUSTOMER_ID: "int64",
        c.TERMINAL_ID: "int64",
        c.TX_AMOUNT: "float64",
        c.TX_TIME_SECONDS: "int64",
        c.TX_TIME_DAYS: "int64",
        c.TX_FRAUD: "int8",
        c.TX_FRAUD_SCENARIO: "int8",
    }
    np.testing.assert_array_equal(tx[c.TRANSACTION_ID], np.arange(len(tx)))
    assert len(small_simulation.base_amount_cents) == len(tx)
    assert not tx.isna().any().any()


def test_times_are_inside_their_day_and_consistent(small_simulation: Simulation) -> None:
    tx = small_simulation.transactions
    seconds = tx[c.TX_TIME_SECONDS]
    in_day = seconds % c.SECONDS_PER_DAY
    assert ((in_day > 0) & (in_day < c.SECONDS_PER_DAY)).all()
    assert (tx[c.TX_TIME_DAYS] == seconds // c.SECONDS_PER_DAY).all()
    config = small_simulation.config
    assert tx[c.TX_TIME_DAYS].between(0, config.n_days - 1).all()
    start = pd.Timestamp(config.start_date)
    assert (tx[c.TX_DATETIME] == start + pd.to_timedelta(seconds, unit="s")).all()
    assert seconds.is_monotonic_increasing


def test_amounts_are_positive_cents(small_simulation: Simulation) -> None:
    amount = small_simulation.transactions[c.TX_AMOUNT]
    assert (amount >= 0).all()
    cents = amount * 100
    np.testing.assert_allclose(cents, np.round(cents), atol=1e-6)


def test_every_amount_above_220_is_fraud(small_simulation: Simulation) -> None:
    tx = small_simulation.transactions
    above = tx[c.TX_AMOUNT] > SCENARIO_1_AMOUNT
    assert above.sum() > 0
    assert (tx.loc[above, c.TX_FRAUD] == 1).all()
    # Scenario 1 is exactly "the drawn amount is above 220" (unless scenario 2 or 3 claimed it).
    base_above = small_simulation.base_amount_cents > SCENARIO_1_AMOUNT * 100
    scenario = tx[c.TX_FRAUD_SCENARIO]
    assert (scenario[base_above] != 0).all()
    assert base_above[(scenario == 1).to_numpy()].all()


def test_fraud_flag_matches_scenario(small_simulation: Simulation) -> None:
    tx = small_simulation.transactions
    assert set(tx[c.TX_FRAUD_SCENARIO].unique()) == {0, 1, 2, 3}
    assert ((tx[c.TX_FRAUD] == 1) == (tx[c.TX_FRAUD_SCENARIO] != 0)).all()


def test_compromised_terminal_windows_are_exactly_28_days(small_simulation: Simulation) -> None:
    tx = small_simulation.transactions
    windows = small_simulation.compromised_terminals
    assert len(windows) == 2 * small_simulation.config.n_days
    inside = _in_windows(tx, windows, c.TERMINAL_ID, TERMINAL_COMPROMISE_DAYS)
    scenario = tx[c.TX_FRAUD_SCENARIO]
    # Inside a window: fraud, scenario 2 unless scenario 3 took the transaction over.
    assert (tx.loc[inside, c.TX_FRAUD] == 1).all()
    assert scenario[inside].isin([2, 3]).all()
    # Scenario 2 happens inside windows only.
    assert not (scenario[~inside] == 2).any()
    # Both window edges are exercised: the last day inside and the first day after.
    rows = tx[[c.TERMINAL_ID, c.TX_TIME_DAYS]].merge(windows, on=c.TERMINAL_ID)
    offset = rows[c.TX_TIME_DAYS] - rows["START_DAY"]
    assert (offset == TERMINAL_COMPROMISE_DAYS - 1).any()
    on_compromised = tx[c.TERMINAL_ID].isin(windows[c.TERMINAL_ID])
    assert (on_compromised & ~inside).any()


def test_compromised_customers_pay_exactly_five_times(small_simulation: Simulation) -> None:
    tx = small_simulation.transactions
    base = small_simulation.base_amount_cents
    cents = np.round(tx[c.TX_AMOUNT].to_numpy() * 100).astype(np.int64)
    s3 = (tx[c.TX_FRAUD_SCENARIO] == 3).to_numpy()
    assert s3.sum() > 0
    np.testing.assert_array_equal(cents[s3], base[s3] * SCENARIO_3_FACTOR)
    np.testing.assert_array_equal(cents[~s3], base[~s3])
    inside = _in_windows(
        tx, small_simulation.compromised_customers, c.CUSTOMER_ID, CUSTOMER_COMPROMISE_DAYS
    ).to_numpy()
    assert inside[s3].all(), "scenario 3 outside a compromised customer's 14-day window"


def test_a_third_of_a_days_compromised_transactions_are_scenario_3(
    small_simulation: Simulation,
) -> None:
    """As in the book: each day, a third of the union of the three compromised customers'
    transactions in the next 14 days become frauds. Checked on the days whose customers have
    no other compromise overlapping in time (otherwise choices interact)."""
    tx = small_simulation.transactions
    windows = small_simulation.compromised_customers
    days = tx[c.TX_TIME_DAYS]
    checked = 0
    for start in windows["START_DAY"].unique():
        customers = windows.loc[windows["START_DAY"] == start, c.CUSTOMER_ID]
        others = windows[windows[c.CUSTOMER_ID].isin(customers) & (windows["START_DAY"] != start)]
        if ((others["START_DAY"] - start).abs() < CUSTOMER_COMPROMISE_DAYS).any():
            continue
        in_window = tx[tx[c.CUSTOMER_ID].isin(customers) & (days >= start)
                       & (days < start + CUSTOMER_COMPROMISE_DAYS)]
        assert (in_window[c.TX_FRAUD_SCENARIO] == 3).sum() == len(in_window) // 3, start
        checked += len(in_window) >= 3
    assert checked >= 5


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(VigilError, match="n_days must be >= 1"):
        SimulationConfig(n_days=0)
    with pytest.raises(VigilError, match="at least 2 terminals"):
        SimulationConfig(n_terminals=1)


def test_write_daily_reads_back_equal(tmp_path: Path, tiny_simulation: Simulation) -> None:
    config = tiny_simulation.config
    tx = tiny_simulation.transactions
    # Drop one day entirely: its file must still be written, empty.
    empty_day = 4
    kept = tx[tx[c.TX_TIME_DAYS] != empty_day].reset_index(drop=True)
    paths = write_daily(kept, tmp_path, config.start_date, config.n_days)

    expected_names = [
        f"{(config.start_date + timedelta(days=d)).isoformat()}.parquet"
        for d in range(config.n_days)
    ]
    assert [p.name for p in paths] == expected_names
    assert sorted(p.name for p in tmp_path.iterdir()) == expected_names

    raw = read_transactions(tmp_path)
    assert [f.day for f in raw.files] == [
        config.start_date + timedelta(days=d) for d in range(config.n_days)
    ]
    rows_per_day = kept[c.TX_TIME_DAYS].value_counts()
    assert [f.rows for f in raw.files] == [
        int(rows_per_day.get(d, 0)) for d in range(config.n_days)
    ]
    assert raw.files[empty_day].rows == 0
    assert raw.coercions == []
    expected = kept.copy()
    for col in c.ID_COLUMNS:
        expected[col] = expected[col].astype(str).astype("string[pyarrow]")
    pd.testing.assert_frame_equal(raw.frame, expected)


def test_write_daily_file_days_match_timestamps(tiny_daily_dir: Path) -> None:
    raw = read_transactions(tiny_daily_dir)
    file_day = np.array([f.day for f in raw.files], dtype=object)[raw.file_of_rows()]
    tx_day = raw.frame[c.TX_DATETIME].dt.date.to_numpy()
    assert (file_day == tx_day).all()


def test_cli_simulate(tmp_path: Path) -> None:
    out = tmp_path / "days"
    stats_path = tmp_path / "stats.json"
    result = CliRunner().invoke(cli, [
        "simulate", "--out", str(out), "--customers", "60", "--terminals", "120",
        "--days", "3", "--start", "2020-02-28", "--seed", "3", "--json", str(stats_path),
    ])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "2020-02-28.parquet", "2020-02-29.parquet", "2020-03-01.parquet"
    ]
    stats = json.loads(stats_path.read_text())
    raw = read_transactions(out)
    assert stats["transactions"] == len(raw.frame) > 0
    assert stats["frauds"] == int(raw.frame[c.TX_FRAUD].sum())
    assert f"wrote {stats['transactions']:,} transactions" in result.output
    assert raw.frame[c.TX_DATETIME].min() >= datetime(2020, 2, 28)
    assert raw.frame[c.TX_DATETIME].max() < datetime(2020, 3, 2)
    # The CLI draws the same data as the library for the same configuration.
    sim = simulate(SimulationConfig(
        n_customers=60, n_terminals=120, n_days=3, start_date=date(2020, 2, 28), seed=3
    ))
    assert len(sim.transactions) == len(raw.frame)
    np.testing.assert_array_equal(sim.transactions[c.TX_AMOUNT], raw.frame[c.TX_AMOUNT])
