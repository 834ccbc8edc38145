"""Every feature of every transaction equals a brute-force reference that loops over raw rows."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from feature_store.transforms import (
    BATCH_EXECUTORS,
    DEFAULT_SPEC,
    FeatureSpec,
    batch_features,
    batch_stats,
)
from vigil import contract as c
from vigil.data.simulate import SimulationConfig, simulate
from vigil.ordering import id_order_key

pytestmark = pytest.mark.unit

DAY = timedelta(days=1)


@pytest.fixture(params=BATCH_EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    """Every batch executor of one machine: sorted arrays, and the SQL (DuckDB) that Spark
    runs too."""
    return str(request.param)


def brute_force(tx: pd.DataFrame, spec: FeatureSpec = DEFAULT_SPEC) -> pd.DataFrame:
    """Straight from the definitions in docs/DESIGN.md, one transaction at a time."""
    # plain datetimes compare much faster than pandas Timestamps (same microsecond precision)
    as_datetimes = pd.Series([ts.to_pydatetime() for ts in tx[c.TX_DATETIME]], dtype=object)
    plain = tx.assign(**{c.TX_DATETIME: as_datetimes.to_numpy()})
    rows = list(plain.itertuples(index=False))
    order = {r.TRANSACTION_ID: (r.TX_DATETIME, id_order_key(r.TRANSACTION_ID)) for r in rows}
    # every row of the same customer / terminal, in no particular order (a plain index)
    of_customer: dict[str, list] = {}
    of_terminal: dict[str, list] = {}
    for o in rows:
        of_customer.setdefault(o.CUSTOMER_ID, []).append(o)
        of_terminal.setdefault(o.TERMINAL_ID, []).append(o)
    out = []
    for r in rows:
        t = r.TX_DATETIME
        f: dict[str, float] = {
            c.TRANSACTION_ID: r.TRANSACTION_ID,
            c.TX_AMOUNT: r.TX_AMOUNT,
            "TX_DURING_WEEKEND": float(t.weekday() >= 5),
            "TX_DURING_NIGHT": float(t.hour <= 6),
        }
        mine = [
            o
            for o in of_customer[r.CUSTOMER_ID]
            if order[o.TRANSACTION_ID] <= order[r.TRANSACTION_ID]
        ]
        for n in spec.customer_windows_days:
            amounts = [o.TX_AMOUNT for o in mine if t - n * DAY < o.TX_DATETIME]
            f[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = len(amounts)
            f[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = sum(amounts) / len(amounts)
            f[f"CUSTOMER_ID_AMOUNT_RATIO_{n}DAY_WINDOW"] = (
                r.TX_AMOUNT / f[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"]
                if f[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] > 0
                else 1.0
            )
        n = max(spec.customer_windows_days)
        amounts = np.array([o.TX_AMOUNT for o in mine if t - n * DAY < o.TX_DATETIME])
        std = amounts.std()
        f[f"CUSTOMER_ID_AMOUNT_ZSCORE_{n}DAY_WINDOW"] = (
            (r.TX_AMOUNT - amounts.mean()) / std if len(amounts) > 1 and std > 1e-4 else 0.0
        )
        recent = [o.TX_AMOUNT for o in mine if o.TX_DATETIME > t - spec.recent_days * DAY]
        start, end = spec.baseline_days
        base = [o.TX_AMOUNT for o in mine if t - start * DAY < o.TX_DATETIME <= t - end * DAY]
        base_avg = sum(base) / len(base) if base else 0.0
        days = spec.recent_days
        f[f"CUSTOMER_ID_MAX_AMOUNT_{days}DAY_RATIO_LAGGED"] = (
            max(recent) / base_avg if base_avg > 0 else 1.0
        )
        f[f"CUSTOMER_ID_AVG_AMOUNT_{days}DAY_RATIO_LAGGED"] = (
            sum(recent) / len(recent) / base_avg if base_avg > 0 else 1.0
        )
        delay = spec.label_delay_days * DAY
        horizon = max(spec.terminal_windows_days) * DAY
        known = [
            o
            for o in of_terminal[r.TERMINAL_ID]
            if t - delay - horizon < o.TX_DATETIME <= t - delay
        ]
        if known:
            latest = max(o.TX_DATETIME for o in known)
            f["TERMINAL_ID_LAST_KNOWN_LABEL"] = max(
                o.TX_FRAUD for o in known if o.TX_DATETIME == latest
            )
            f["TERMINAL_ID_DAYS_SINCE_LAST_KNOWN_LABEL"] = (t - (latest + delay)) / DAY
        else:
            f["TERMINAL_ID_LAST_KNOWN_LABEL"] = 0
            f["TERMINAL_ID_DAYS_SINCE_LAST_KNOWN_LABEL"] = float(max(spec.terminal_windows_days))
        for n in spec.terminal_windows_days:
            lo, hi = t - delay - n * DAY, t - delay
            labels = [o.TX_FRAUD for o in of_terminal[r.TERMINAL_ID] if lo < o.TX_DATETIME <= hi]
            f[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = len(labels)
            f[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = sum(labels) / len(labels) if labels else 0.0
        out.append(f)
    return pd.DataFrame(out)


def _as_raw(sim_tx: pd.DataFrame) -> pd.DataFrame:
    tx = sim_tx.copy()
    for col in c.ID_COLUMNS:
        tx[col] = tx[col].astype(str).astype("string[pyarrow]")
    return tx


def assert_features_equal(actual: pd.DataFrame, expected: pd.DataFrame, spec: FeatureSpec) -> None:
    actual = actual.set_index(c.TRANSACTION_ID).loc[expected[c.TRANSACTION_ID]]
    for name in spec.features:
        np.testing.assert_allclose(
            actual[name].to_numpy(np.float64),
            expected[name].to_numpy(np.float64),
            rtol=1e-9,
            atol=1e-9,
            err_msg=name,
        )


def test_simulated_days_match_brute_force(executor: str) -> None:
    sim = simulate(SimulationConfig(n_customers=40, n_terminals=30, n_days=45, radius=30, seed=3))
    tx = _as_raw(sim.transactions)
    assert len(tx) > 1500 and tx[c.TX_FRAUD].sum() > 20
    assert_features_equal(batch_features(tx, executor=executor), brute_force(tx), DEFAULT_SPEC)


def test_many_ties_in_shuffled_rows_match_brute_force(executor: str) -> None:
    """Times floored to the hour (a customer's transactions often share an instant), rows in
    random order: arrival order among peers is (time, id) whatever the row order."""
    sim = simulate(SimulationConfig(n_customers=15, n_terminals=10, n_days=40, radius=30, seed=5))
    tx = _as_raw(sim.transactions)
    tx[c.TX_DATETIME] = tx[c.TX_DATETIME].dt.floor("h")
    tx = tx.sample(frac=1.0, random_state=7).reset_index(drop=True)
    peers = tx.duplicated([c.CUSTOMER_ID, c.TX_DATETIME], keep=False)
    assert peers.sum() > 50
    assert_features_equal(batch_features(tx, executor=executor), brute_force(tx), DEFAULT_SPEC)


#: Ids on which DuckDB's TRY_CAST, pandas' to_numeric and a digits regex used to disagree.
HARD_IDS = ["1234567890123456789", "1e3", "9223372036854775808", "-5", "+5", "007", "7", "abc",
            " 5", "0x10"]


def test_same_instant_transactions_count_in_the_one_id_order(executor: str) -> None:
    """One customer's transactions at one instant, rows shuffled: batch counts each one after
    the ids :func:`vigil.ordering.id_order_key` puts before it."""
    t0 = pd.Timestamp("2018-04-02 12:00:00")
    rng = np.random.default_rng(3)
    ids = list(rng.permutation(HARD_IDS))
    tx = _as_raw(pd.DataFrame({
        c.TRANSACTION_ID: ids,
        c.TX_DATETIME: pd.Series([t0] * len(ids)).astype("datetime64[us]"),
        c.CUSTOMER_ID: "A",
        c.TERMINAL_ID: "T",
        c.TX_AMOUNT: rng.uniform(1, 100, len(ids)).round(2),
        c.TX_FRAUD: 0,
    }))
    got = batch_features(tx, executor=executor).set_index(c.TRANSACTION_ID)
    expected_order = sorted(ids, key=id_order_key)
    assert expected_order[:8] == ["-5", "+5", "007", "7", "1234567890123456789", " 5", "0x10",
                                  "1e3"]
    counts = got.loc[expected_order, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"].tolist()
    assert counts == list(range(1, len(ids) + 1))
    assert_features_equal(got.reset_index(), brute_force(tx), DEFAULT_SPEC)


def test_window_edges_ties_and_label_delay(executor: str) -> None:
    """Hand-placed transactions on every edge the definitions have."""
    t0 = pd.Timestamp("2018-04-02 12:00:00")  # a Monday
    events = [
        # (id, time, customer, terminal, amount, fraud)
        ("1", t0, "A", "T", 10.0, 1),
        ("2", t0 + DAY, "A", "T", 20.0, 0),  # exactly 1 day later: 1-day window excludes #1
        ("3", t0 + DAY, "A", "T", 30.0, 0),  # same instant as #2: sees #2, #2 does not see #3
        ("10", t0 + DAY, "A", "U", 5.0, 0),  # ids order numerically: 10 comes after 3
        ("11", t0 + DAY, "D", "T", 1.0, 1),  # a fraud on T at that instant: the last known label
        ("4", t0 + 7 * DAY, "B", "T", 40.0, 0),  # #1's label known exactly now (7 days)
        ("5", t0 + 7 * DAY - pd.Timedelta(microseconds=1), "B", "T", 50.0, 0),  # 1 µs too early
        ("6", t0 + 8 * DAY, "B", "T", 60.0, 1),  # 1-day terminal window (t-8d, t-7d] excludes #1
        ("7", t0 + 38 * DAY, "A", "T", 0.0, 0),  # zero amount, 30-day windows only see itself
        ("8", pd.Timestamp("2018-04-07 06:59:59"), "C", "U", 1.0, 0),  # Saturday night
        ("9", pd.Timestamp("2018-04-08 07:00:00"), "C", "U", 2.0, 0),  # Sunday, not night
    ]
    tx = pd.DataFrame(
        events,
        columns=[
            c.TRANSACTION_ID,
            c.TX_DATETIME,
            c.CUSTOMER_ID,
            c.TERMINAL_ID,
            c.TX_AMOUNT,
            c.TX_FRAUD,
        ],
    )
    tx[c.TX_DATETIME] = tx[c.TX_DATETIME].astype("datetime64[us]")
    tx = _as_raw(tx)
    got = batch_features(tx, executor=executor).set_index(c.TRANSACTION_ID)
    stats = batch_stats(tx, executor=executor)
    position = {tid: i for i, tid in enumerate(tx[c.TRANSACTION_ID])}
    # the largest recent amount counts same-instant transactions in arrival order only
    assert stats.customer_recent_max[position["2"]] == 20.0
    assert stats.customer_recent_max[position["3"]] == 30.0
    assert stats.customer_recent_max[position["10"]] == 30.0
    assert_features_equal(got.reset_index(), brute_force(tx), DEFAULT_SPEC)
    # and the edges, spelled out
    assert got.loc["2", "CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1
    assert got.loc["3", "CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2
    assert got.loc["10", "CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 3
    assert got.loc["3", "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] == 25.0
    assert got.loc["4", "TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1
    assert got.loc["4", "TERMINAL_ID_RISK_1DAY_WINDOW"] == 1.0
    assert got.loc["5", "TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 0
    assert got.loc["6", "TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 3  # #2, #3, #11, not #1
    assert got.loc["6", "TERMINAL_ID_RISK_7DAY_WINDOW"] == pytest.approx(2 / 4)
    # latest known labels of T at t0 + 1 day: #2, #3 genuine, #11 fraud -> fraud wins
    assert got.loc["6", "TERMINAL_ID_LAST_KNOWN_LABEL"] == 1
    assert got.loc["6", "TERMINAL_ID_DAYS_SINCE_LAST_KNOWN_LABEL"] == 0.0
    assert got.loc["4", "TERMINAL_ID_LAST_KNOWN_LABEL"] == 1  # #1, known exactly at t
    assert got.loc["5", "TERMINAL_ID_LAST_KNOWN_LABEL"] == 0  # nothing known yet
    assert got.loc["5", "TERMINAL_ID_DAYS_SINCE_LAST_KNOWN_LABEL"] == 30.0
    assert got.loc["7", "CUSTOMER_ID_NB_TX_30DAY_WINDOW"] == 1
    assert got.loc["7", "CUSTOMER_ID_AMOUNT_RATIO_30DAY_WINDOW"] == 1.0
    assert got.loc["8", ["TX_DURING_WEEKEND", "TX_DURING_NIGHT"]].tolist() == [1, 1]
    assert got.loc["9", ["TX_DURING_WEEKEND", "TX_DURING_NIGHT"]].tolist() == [1, 0]


def test_other_windows_and_delay(executor: str) -> None:
    spec = FeatureSpec(
        customer_windows_days=(2, 3),
        terminal_windows_days=(5,),
        label_delay_days=2,
        recent_days=2,
        baseline_days=(9, 4),
    )
    sim = simulate(
        SimulationConfig(
            n_customers=20,
            n_terminals=10,
            n_days=20,
            radius=40,
            seed=5,
            start_date=date(2020, 2, 20),
        )
    )
    tx = _as_raw(sim.transactions)
    assert_features_equal(batch_features(tx, spec, executor=executor), brute_force(tx, spec), spec)
    assert "CUSTOMER_ID_NB_TX_3DAY_WINDOW" in spec.features
    assert date(2020, 2, 20) + timedelta(days=9) == date(2020, 2, 29)  # spans a leap day
