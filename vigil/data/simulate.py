"""Transaction simulator following the handbook's generative process (Le Borgne et al., ch. 3).

Vectorized: a customer-day matrix of Poisson counts is expanded into transactions in one pass;
fraud scenarios are applied with set membership (scenario 2) and a short loop over days over
pre-grouped customer indices (scenario 3). Deterministic for a seed (NumPy ``default_rng``).

One deliberate departure from the book: a transaction already multiplied by scenario 3 is not
picked again by an overlapping compromise of the same customer, so every scenario-3 amount is
exactly 5x its drawn amount (the book can produce 25x).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.spatial import cKDTree

from vigil import contract as c
from vigil.data import drift as dr
from vigil.errors import VigilError

#: The book's data set (5,000 customers, 10,000 terminals, 183 days from 2018-04-01).
BOOK_TRANSACTIONS = 1_754_155
BOOK_FRAUDS = 14_681
BOOK_SCENARIOS = {1: 973, 2: 9_077, 3: 4_631}

TERMINAL_COMPROMISE_DAYS = 28
CUSTOMER_COMPROMISE_DAYS = 14
TERMINALS_COMPROMISED_PER_DAY = 2
CUSTOMERS_COMPROMISED_PER_DAY = 3
SCENARIO_1_AMOUNT = 220.0
SCENARIO_3_FACTOR = 5


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    n_customers: int = 5_000
    n_terminals: int = 10_000
    n_days: int = 183
    start_date: date = date(2018, 4, 1)
    radius: float = 5.0
    seed: int = 0
    #: Drift scenarios (:mod:`vigil.data.drift`), applied in this order.
    drifts: tuple[dr.Drift, ...] = ()

    def __post_init__(self) -> None:
        for name in ("n_customers", "n_terminals", "n_days"):
            if getattr(self, name) < 1:
                raise VigilError(f"simulation: {name} must be >= 1, got {getattr(self, name)}")
        if self.radius <= 0:
            raise VigilError(f"simulation: radius must be > 0, got {self.radius}")
        if self.n_terminals < TERMINALS_COMPROMISED_PER_DAY:
            raise VigilError(f"simulation: need at least {TERMINALS_COMPROMISED_PER_DAY} terminals")
        if self.n_customers < CUSTOMERS_COMPROMISED_PER_DAY:
            raise VigilError(f"simulation: need at least {CUSTOMERS_COMPROMISED_PER_DAY} customers")
        end = self.start_date + timedelta(days=self.n_days - 1)
        for drift in self.drifts:
            if not self.start_date <= drift.start <= end:
                raise VigilError(
                    f"simulation: drift {drift.scenario!r} starts {drift.start}, outside the "
                    f"simulated days {self.start_date} .. {end}"
                )


@dataclasses.dataclass
class Simulation:
    """Simulated raw transactions plus the ground truth the tests check them against."""

    config: SimulationConfig
    transactions: pd.DataFrame
    customers: pd.DataFrame
    terminals: pd.DataFrame
    #: (TERMINAL_ID, START_DAY): the terminal's transactions in [START_DAY, +28) are all fraud.
    compromised_terminals: pd.DataFrame
    #: (CUSTOMER_ID, START_DAY): a third of the customer's transactions in [START_DAY, +14)
    #: are 5x frauds.
    compromised_customers: pd.DataFrame
    #: Drawn amount in cents before scenario 3, aligned with ``transactions``.
    base_amount_cents: np.ndarray
    #: True for the rows a drift scenario added, aligned with ``transactions``.
    added: np.ndarray

    def statistics(self) -> dict[str, object]:
        tx = self.transactions
        scenarios = tx[c.TX_FRAUD_SCENARIO].value_counts().to_dict()
        return {
            "transactions": len(tx),
            "frauds": int(tx[c.TX_FRAUD].sum()),
            "fraud_rate": float(tx[c.TX_FRAUD].mean()) if len(tx) else 0.0,
            "scenarios": {
                k: int(scenarios.get(k, 0))
                for k in (1, 2, 3, dr.CARD_TESTING_SCENARIO)
                if k <= 3 or k in scenarios
            },
            "added_by_drift": int(self.added.sum()),
            "customers": int(tx[c.CUSTOMER_ID].nunique()),
            "terminals": int(tx[c.TERMINAL_ID].nunique()),
            "first": str(tx[c.TX_DATETIME].min()) if len(tx) else None,
            "last": str(tx[c.TX_DATETIME].max()) if len(tx) else None,
        }


Progress = Callable[[str], None]


def _no_progress(_: str) -> None:
    return None


def simulate(config: SimulationConfig, progress: Progress = _no_progress) -> Simulation:
    rng = np.random.default_rng(config.seed)
    n_c, n_t, n_d = config.n_customers, config.n_terminals, config.n_days

    progress("profiles")
    customer_xy = rng.uniform(0, 100, size=(n_c, 2))
    mean_amount = rng.uniform(5, 100, size=n_c)
    std_amount = mean_amount / 2
    mean_nb_tx_per_day = rng.uniform(0, 4, size=n_c)
    terminal_xy = rng.uniform(0, 100, size=(n_t, 2))

    # Terminals within the radius of each customer, as a CSR structure (offsets + flat ids).
    neighbours = cKDTree(terminal_xy).query_ball_point(customer_xy, r=config.radius)
    n_available = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=n_c)
    offsets = np.concatenate(([0], np.cumsum(n_available)[:-1]))
    flat = np.fromiter(
        (t for n in neighbours for t in sorted(n)), dtype=np.int64, count=int(n_available.sum())
    )

    progress("transactions")
    counts = rng.poisson(np.repeat(mean_nb_tx_per_day, n_d).reshape(n_c, n_d))
    cell = np.repeat(np.arange(n_c * n_d, dtype=np.int64), counts.ravel())
    customer = cell // n_d
    day = cell % n_d
    # int() truncates toward zero in the book; astype(int64) does the same.
    time_in_day = rng.normal(c.SECONDS_PER_DAY / 2, 20_000, size=len(cell)).astype(np.int64)
    amount = rng.normal(mean_amount[customer], std_amount[customer])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean_amount[customer[negative]])
    # Transactions outside the day are dropped, as in the book; so are customers without terminals.
    keep = (time_in_day > 0) & (time_in_day < c.SECONDS_PER_DAY) & (n_available[customer] > 0)
    customer, day, time_in_day, amount = customer[keep], day[keep], time_in_day[keep], amount[keep]
    pick = (rng.random(len(customer)) * n_available[customer]).astype(np.int64)
    terminal = flat[offsets[customer] + pick]
    cents = np.round(amount * 100).astype(np.int64)
    seconds = time_in_day + day * c.SECONDS_PER_DAY

    order = np.lexsort((customer, seconds))
    customer, terminal, day, seconds, cents = (
        a[order] for a in (customer, terminal, day, seconds, cents)
    )
    n = len(customer)

    progress("frauds")
    base_cents = cents.copy()
    fraud = np.zeros(n, dtype=np.int8)
    scenario = np.zeros(n, dtype=np.int8)
    # Scenario 1: any amount above 220 is fraud.
    s1 = cents > int(SCENARIO_1_AMOUNT * 100)
    fraud[s1], scenario[s1] = 1, 1

    # Scenario 2: each day two terminals are compromised for 28 days.
    comp_terminals = np.stack(
        [rng.choice(n_t, TERMINALS_COMPROMISED_PER_DAY, replace=False) for _ in range(n_d)]
    )
    start_t = np.repeat(np.arange(n_d), TERMINALS_COMPROMISED_PER_DAY)
    comp_t = comp_terminals.ravel()
    covered = (
        comp_t[:, None] * n_d + start_t[:, None] + np.arange(TERMINAL_COMPROMISE_DAYS)[None, :]
    )
    covered = covered[(start_t[:, None] + np.arange(TERMINAL_COMPROMISE_DAYS)[None, :]) < n_d]
    s2 = np.isin(terminal * n_d + day, covered)
    fraud[s2], scenario[s2] = 1, 2

    # Scenario 3: each day three customers are compromised for 14 days; a third of their
    # transactions in that window get 5x the amount.
    by_customer = np.argsort(customer, kind="stable")
    bounds = np.searchsorted(customer[by_customer], np.arange(n_c + 1))
    comp_customers = np.stack(
        [rng.choice(n_c, CUSTOMERS_COMPROMISED_PER_DAY, replace=False) for _ in range(n_d)]
    )
    for d in range(n_d):
        idx = np.concatenate([by_customer[bounds[cu] : bounds[cu + 1]] for cu in comp_customers[d]])
        idx = idx[(day[idx] >= d) & (day[idx] < d + CUSTOMER_COMPROMISE_DAYS)]
        k = len(idx) // 3
        eligible = np.sort(idx[scenario[idx] != 3])
        chosen = rng.choice(eligible, min(k, len(eligible)), replace=False)
        cents[chosen] *= SCENARIO_3_FACTOR
        fraud[chosen], scenario[chosen] = 1, 3

    comp_t_frame = pd.DataFrame({c.TERMINAL_ID: comp_t, "START_DAY": start_t})
    added = np.zeros(n, dtype=bool)
    if config.drifts:
        progress("drift")
        frame = dr.Frame(
            customer=customer, terminal=terminal, day=day, seconds=seconds, cents=cents,
            base_cents=base_cents, fraud=fraud, scenario=scenario, added=added,
        )
        world = dr.World(
            seed=config.seed, n_days=n_d, start_date=config.start_date,
            customer_xy=customer_xy, mean_amount=mean_amount,
            mean_nb_tx_per_day=mean_nb_tx_per_day, terminal_xy=terminal_xy,
            radius=config.radius, compromised_terminals=comp_t_frame,
            fraud_amount_cents=int(SCENARIO_1_AMOUNT * 100),
            terminal_compromise_days=TERMINAL_COMPROMISE_DAYS,
        )
        for drift in config.drifts:
            frame = dr.apply(drift, frame, world)
        customer, terminal, day, seconds = frame.customer, frame.terminal, frame.day, frame.seconds
        cents, base_cents, fraud = frame.cents, frame.base_cents, frame.fraud
        scenario, added = frame.scenario, frame.added
        n = len(customer)

    start = datetime.combine(config.start_date, datetime.min.time())
    transactions = pd.DataFrame(
        {
            c.TRANSACTION_ID: np.arange(n, dtype=np.int64),
            c.TX_DATETIME: pd.to_datetime(seconds, unit="s", origin=pd.Timestamp(start)).astype(
                "datetime64[us]"
            ),
            c.CUSTOMER_ID: customer,
            c.TERMINAL_ID: terminal,
            c.TX_AMOUNT: cents / 100.0,
            c.TX_TIME_SECONDS: seconds,
            c.TX_TIME_DAYS: day,
            c.TX_FRAUD: fraud,
            c.TX_FRAUD_SCENARIO: scenario,
        }
    )
    customers = pd.DataFrame(
        {
            c.CUSTOMER_ID: np.arange(n_c),
            "X": customer_xy[:, 0],
            "Y": customer_xy[:, 1],
            "MEAN_AMOUNT": mean_amount,
            "STD_AMOUNT": std_amount,
            "MEAN_NB_TX_PER_DAY": mean_nb_tx_per_day,
            "NB_TERMINALS": n_available,
        }
    )
    terminals = pd.DataFrame(
        {c.TERMINAL_ID: np.arange(n_t), "X": terminal_xy[:, 0], "Y": terminal_xy[:, 1]}
    )
    return Simulation(
        config=config,
        transactions=transactions,
        customers=customers,
        terminals=terminals,
        compromised_terminals=comp_t_frame,
        compromised_customers=pd.DataFrame(
            {
                c.CUSTOMER_ID: comp_customers.ravel(),
                "START_DAY": np.repeat(np.arange(n_d), CUSTOMERS_COMPROMISED_PER_DAY),
            }
        ),
        base_amount_cents=base_cents,
        added=added,
    )


def write_daily(
    transactions: pd.DataFrame,
    out: Path,
    start_date: date,
    n_days: int,
    progress: Callable[[int], object] | None = None,
) -> list[Path]:
    """Write one parquet file per day (``YYYY-MM-DD.parquet``), empty days included."""
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(transactions, preserve_index=False)
    days = transactions[c.TX_TIME_DAYS].to_numpy()
    bounds = np.searchsorted(days, np.arange(n_days + 1))
    paths = []
    for d in range(n_days):
        path = out / f"{(start_date + timedelta(days=d)).isoformat()}.parquet"
        pq.write_table(table.slice(bounds[d], bounds[d + 1] - bounds[d]), path)
        paths.append(path)
        if progress:
            progress(1)
    return paths
