"""Drift scenarios: each changes exactly what it says from its start day, and nothing before."""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from vigil import contract as c
from vigil.data import drift as dr
from vigil.data.drift import Drift
from vigil.data.ingest import read_transactions
from vigil.data.simulate import Simulation, SimulationConfig, simulate
from vigil.errors import VigilError
from vigil_cli.cli import cli

pytestmark = pytest.mark.unit

BASE = SimulationConfig(n_customers=300, n_terminals=600, n_days=20, seed=11)
START = date(2018, 4, 11)
START_DAY = 10


@pytest.fixture(scope="module")
def base() -> Simulation:
    return simulate(BASE)


def _drifted(scenario: str) -> Simulation:
    return simulate(dataclasses.replace(BASE, drifts=(Drift(scenario, START),)))


def _before(tx: pd.DataFrame) -> pd.DataFrame:
    return tx[tx[c.TX_TIME_DAYS] < START_DAY].reset_index(drop=True)


@pytest.mark.parametrize("scenario", list(dr.SCENARIOS))
def test_days_before_the_start_are_identical(base: Simulation, scenario: str) -> None:
    drifted = _drifted(scenario)
    pd.testing.assert_frame_equal(_before(drifted.transactions), _before(base.transactions))
    assert not drifted.added[(drifted.transactions[c.TX_TIME_DAYS] < START_DAY).to_numpy()].any()
    tx = drifted.transactions
    np.testing.assert_array_equal(tx[c.TRANSACTION_ID], np.arange(len(tx)))
    assert tx[c.TX_TIME_SECONDS].is_monotonic_increasing
    assert len(drifted.base_amount_cents) == len(drifted.added) == len(tx)
    # Something did change from the start day on.
    assert not tx.drop(columns=c.TRANSACTION_ID).equals(
        base.transactions.drop(columns=c.TRANSACTION_ID)
    )


def test_amount_inflation_changes_amounts_only_and_from_the_start(base: Simulation) -> None:
    drifted = _drifted(dr.AMOUNT_INFLATION)
    tx, before = drifted.transactions, base.transactions
    assert not drifted.added.any() and len(tx) == len(before)
    pd.testing.assert_frame_equal(tx.drop(columns=c.TX_AMOUNT), before.drop(columns=c.TX_AMOUNT))
    hit = (tx[c.TX_TIME_DAYS] >= START_DAY).to_numpy()
    inflated = np.round(base.base_amount_cents * dr.AMOUNT_INFLATION_FACTOR).astype(np.int64)
    np.testing.assert_array_equal(drifted.base_amount_cents[hit], inflated[hit])
    np.testing.assert_array_equal(drifted.base_amount_cents[~hit], base.base_amount_cents[~hit])
    s3 = (tx[c.TX_FRAUD_SCENARIO] == 3).to_numpy()
    expected = np.where(s3, inflated * 5, inflated) / 100.0
    np.testing.assert_array_equal(tx[c.TX_AMOUNT].to_numpy()[hit], expected[hit])
    assert hit.sum() > 1000 and (s3 & hit).sum() > 0


def test_card_testing_adds_small_payments_across_many_terminals(base: Simulation) -> None:
    drifted = _drifted(dr.CARD_TESTING)
    tx = drifted.transactions
    original = tx[~drifted.added].drop(columns=c.TRANSACTION_ID).reset_index(drop=True)
    pd.testing.assert_frame_equal(original, base.transactions.drop(columns=c.TRANSACTION_ID))
    new = tx[drifted.added]
    days = BASE.n_days - START_DAY
    per_day = dr.CARD_TESTING_CARDS_PER_DAY * dr.CARD_TESTING_TESTS_PER_CARD
    assert len(new) == days * per_day
    assert (new[c.TX_TIME_DAYS] >= START_DAY).all()
    assert new.groupby(c.TX_TIME_DAYS).size().eq(per_day).all()
    assert (new[c.TX_FRAUD] == 1).all()
    assert (new[c.TX_FRAUD_SCENARIO] == dr.CARD_TESTING_SCENARIO).all()
    assert new[c.TX_AMOUNT].between(0.5, 5.0).all()
    bursts = new.groupby([c.TX_TIME_DAYS, c.CUSTOMER_ID])
    assert (bursts.size() == dr.CARD_TESTING_TESTS_PER_CARD).all()
    # Each card's tests hit as many different terminals, within one hour.
    assert (bursts[c.TERMINAL_ID].nunique() == dr.CARD_TESTING_TESTS_PER_CARD).all()
    span = bursts[c.TX_TIME_SECONDS].max() - bursts[c.TX_TIME_SECONDS].min()
    assert (span < dr.CARD_TESTING_BURST_S).all()


def test_activity_shift_adds_night_transactions_at_usual_terminals(base: Simulation) -> None:
    drifted = _drifted(dr.ACTIVITY_SHIFT)
    tx = drifted.transactions
    original = tx[~drifted.added].drop(columns=c.TRANSACTION_ID).reset_index(drop=True)
    pd.testing.assert_frame_equal(original, base.transactions.drop(columns=c.TRANSACTION_ID))
    new = tx[drifted.added]
    assert (new[c.TX_TIME_DAYS] >= START_DAY).all()
    after = (base.transactions[c.TX_TIME_DAYS] >= START_DAY).sum()
    # Twice as active: about as many added rows as the period had (Poisson, same daily means).
    assert 0.85 < len(new) / after < 1.15
    hour = (new[c.TX_TIME_SECONDS] % c.SECONDS_PER_DAY) / 3600
    assert abs(hour.mean() - dr.ACTIVITY_SHIFT_HOUR) < 0.2
    base_hour = (base.transactions[c.TX_TIME_SECONDS] % c.SECONDS_PER_DAY) / 3600
    assert (base_hour <= 6).mean() < 0.25 and (hour <= 6).mean() > 0.95
    # At terminals within the customer's radius, like the customer's usual ones.
    cust = base.customers.set_index(c.CUSTOMER_ID).loc[new[c.CUSTOMER_ID], ["X", "Y"]].to_numpy()
    term = base.terminals.set_index(c.TERMINAL_ID).loc[new[c.TERMINAL_ID], ["X", "Y"]].to_numpy()
    assert (np.hypot(*(cust - term).T) <= BASE.radius).all()
    # Labelled by the simulator's own rules.
    above = new[c.TX_AMOUNT] > 220
    assert (new.loc[above, c.TX_FRAUD] == 1).all()
    assert set(new[c.TX_FRAUD_SCENARIO].unique()) <= {0, 1, 2}
    assert ((new[c.TX_FRAUD] == 1) == (new[c.TX_FRAUD_SCENARIO] != 0)).all()


def test_scenarios_are_deterministic_and_combine() -> None:
    both = (Drift(dr.CARD_TESTING, START), Drift(dr.AMOUNT_INFLATION, date(2018, 4, 15)))
    config = dataclasses.replace(BASE, drifts=both)
    one, two = simulate(config), simulate(config)
    pd.testing.assert_frame_equal(one.transactions, two.transactions)
    # Inflation applied after card testing inflates the tests of its own days too.
    tests = one.transactions[one.added]
    late = tests[c.TX_TIME_DAYS] >= 14
    assert tests.loc[late, c.TX_AMOUNT].max() > 5.0
    assert tests.loc[~late, c.TX_AMOUNT].max() <= 5.0


def test_bad_drift_is_rejected() -> None:
    with pytest.raises(VigilError, match=r"unknown drift scenario 'inflation'.*amount_inflation"):
        Drift("inflation", START)
    with pytest.raises(VigilError, match="starts 2018-05-01, outside the simulated days"):
        dataclasses.replace(BASE, drifts=(Drift(dr.CARD_TESTING, date(2018, 5, 1)),))


def test_cli_simulate_with_drift(tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["simulate", "--customers", "60", "--terminals", "120", "--days", "4",
              "--start", "2026-11-18", "--seed", "3"]
    result = runner.invoke(cli, [*common, "--out", str(tmp_path / "x"), "--drift", "card_testing"])
    assert result.exit_code == 2 and "--drift needs --drift-start" in result.output
    result = runner.invoke(cli, [*common, "--out", str(tmp_path / "x"),
                                 "--drift", "card_testing", "--drift-start", "2026-12-01"])
    assert result.exit_code == 2 and "outside the simulated days" in result.output
    stats_path = tmp_path / "stats.json"
    result = runner.invoke(cli, [*common, "--out", str(tmp_path / "d"), "--drift", "card_testing",
                                 "--drift-start", "2026-11-20", "--json", str(stats_path)])
    assert result.exit_code == 0, result.output
    assert "drift card_testing from 2026-11-20" in result.output
    stats = json.loads(stats_path.read_text())
    assert stats["added_by_drift"] == 2 * 10 * 20 == stats["scenarios"]["4"]
    frame = read_transactions(tmp_path / "d").frame
    assert (frame[c.TX_FRAUD_SCENARIO] == 4).sum() == 400
    assert frame.loc[frame[c.TX_FRAUD_SCENARIO] == 4, c.TX_DATETIME].min() >= pd.Timestamp(
        "2026-11-20"
    )
