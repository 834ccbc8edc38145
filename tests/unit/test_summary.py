"""The one summary of a transaction data set: counts, span, nulls, unlabelled data, JSON."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from vigil import contract as c
from vigil.data.simulate import Simulation
from vigil.data.summary import TransactionSummary, summarize_transactions
from vigil.errors import DataError

pytestmark = pytest.mark.unit


def test_summary_counts_what_the_simulation_holds(tiny_simulation: Simulation) -> None:
    tx = tiny_simulation.transactions
    s = summarize_transactions(tx)
    assert (s.rows, s.frauds) == (len(tx), int(tx[c.TX_FRAUD].sum()))
    assert (s.customers, s.terminals) == (tx[c.CUSTOMER_ID].nunique(), tx[c.TERMINAL_ID].nunique())
    assert (s.first, s.last) == (tx[c.TX_DATETIME].min(), tx[c.TX_DATETIME].max())
    assert s.span() == (date(2018, 4, 1), date(2018, 4, 10))
    assert s.days == tiny_simulation.config.n_days
    assert s.fraud_rate == pytest.approx(tx[c.TX_FRAUD].mean())


def test_nulls_and_bad_labels_are_not_counted(tiny_transactions: pd.DataFrame) -> None:
    """What the validation gate reads may hold nulls and labels other than 0/1."""
    tx = tiny_transactions.head(4).copy()
    tx[c.TX_FRAUD] = pd.array([1, 7, None, 0], dtype="Int64")
    tx[c.CUSTOMER_ID] = pd.array(["a", None, "a", "b"], dtype="string")
    tx[c.TX_DATETIME] = pd.to_datetime(
        ["2021-01-02 03:04:05.0", None, "2021-01-01 23:59:59.5", None], format="ISO8601"
    )
    s = summarize_transactions(tx)
    assert (s.rows, s.frauds, s.customers) == (4, 1, 2)
    assert (s.first, s.last) == (pd.Timestamp("2021-01-01 23:59:59.5"),
                                 pd.Timestamp("2021-01-02 03:04:05"))
    assert (s.first_day, s.last_day, s.days) == (date(2021, 1, 1), date(2021, 1, 2), 2)


def test_no_labels_no_times_no_rows(tiny_transactions: pd.DataFrame) -> None:
    unlabelled = summarize_transactions(tiny_transactions.drop(columns=[c.TX_FRAUD]))
    assert unlabelled.frauds is None and unlabelled.fraud_rate is None
    empty = summarize_transactions(tiny_transactions.iloc[:0])
    assert (empty.rows, empty.frauds, empty.fraud_rate, empty.first, empty.days) == (
        0, 0, 0.0, None, 0
    )
    with pytest.raises(DataError, match="no transaction has a TX_DATETIME"):
        empty.span()
    with pytest.raises(DataError, match=r"without the columns \['TERMINAL_ID'\]"):
        summarize_transactions(tiny_transactions.drop(columns=[c.TERMINAL_ID]))


def test_json_round_trip(tiny_simulation: Simulation) -> None:
    s = summarize_transactions(tiny_simulation.transactions)
    data = json.loads(json.dumps(s.to_dict()))
    assert s.first is not None and data["first"] == s.first.isoformat()
    assert TransactionSummary.from_dict(data) == s
    nothing = TransactionSummary(0, None, 0, 0, None, None)
    assert TransactionSummary.from_dict(json.loads(json.dumps(nothing.to_dict()))) == nothing
