"""Named drift scenarios for the simulator: data that changes on a given day.

A scenario is applied after the handbook's process has drawn everything, with its own random
stream (seeded from the simulation's seed and the scenario's name), so a drifted simulation is
the undrifted one, row for row, before its start day; from the start day on it differs by what
the scenario says and nothing else:

``amount_inflation``
    Every amount from the start day is ``AMOUNT_INFLATION_FACTOR`` (1.5) times its drawn value
    (scenario-3 frauds stay exactly 5x their inflated drawn amount). Labels do not change:
    prices rising is not fraud, so a model that learned "above 220 is fraud" starts to flag
    genuine payments.
``card_testing``
    A new fraud pattern (scenario 4): each day from the start, ``CARD_TESTING_CARDS_PER_DAY``
    (10) random cards make ``CARD_TESTING_TESTS_PER_CARD`` (20) small payments (0.50 to 5.00)
    within one hour, each at a different terminal drawn from all terminals, all fraudulent.
    Added rows; existing rows keep their values.
``activity_shift``
    Customers become twice as active, at night: each day from the start every customer makes
    extra transactions (Poisson with the customer's own daily mean), around
    ``ACTIVITY_SHIFT_HOUR`` (02:00, standard deviation one hour), amounts drawn as the
    customer's usual ones, at the customer's usual terminals. Added rows, labelled by the
    simulator's own rules (above 220: scenario 1; at a compromised terminal in its window:
    scenario 2).

Rows are kept in the simulator's order (by time); ``TRANSACTION_ID`` is renumbered by position,
so ids before the start day are unchanged. ``Simulation.added`` marks the rows a scenario added.
"""

from __future__ import annotations

import dataclasses
import zlib
from datetime import date
from typing import Final

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from vigil import contract as c
from vigil.errors import VigilError

AMOUNT_INFLATION: Final = "amount_inflation"
CARD_TESTING: Final = "card_testing"
ACTIVITY_SHIFT: Final = "activity_shift"

#: Scenario name -> one line for ``--help`` and errors.
SCENARIOS: Final = {
    AMOUNT_INFLATION: "every amount x1.5 from the start day; labels unchanged",
    CARD_TESTING: "new fraud (scenario 4): 10 cards a day make 20 payments of 0.50-5.00 "
    "at 20 random terminals within an hour",
    ACTIVITY_SHIFT: "customers make twice as many transactions, the extra ones around 02:00",
}

AMOUNT_INFLATION_FACTOR: Final = 1.5
CARD_TESTING_SCENARIO: Final = 4
CARD_TESTING_CARDS_PER_DAY: Final = 10
CARD_TESTING_TESTS_PER_CARD: Final = 20
CARD_TESTING_MIN_CENTS: Final = 50
CARD_TESTING_MAX_CENTS: Final = 500
CARD_TESTING_BURST_S: Final = 3_600
ACTIVITY_SHIFT_HOUR: Final = 2
ACTIVITY_SHIFT_STD_S: Final = 3_600


@dataclasses.dataclass(frozen=True)
class Drift:
    """One named scenario (a key of :data:`SCENARIOS`) starting on ``start``, included."""

    scenario: str
    start: date

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise VigilError(
                f"simulation: unknown drift scenario {self.scenario!r} "
                f"(known: {', '.join(SCENARIOS)})"
            )


@dataclasses.dataclass(frozen=True)
class Frame:
    """The arrays a scenario reads and returns, aligned row by row (simulator order)."""

    customer: np.ndarray
    terminal: np.ndarray
    day: np.ndarray
    seconds: np.ndarray
    cents: np.ndarray
    base_cents: np.ndarray
    fraud: np.ndarray
    scenario: np.ndarray
    added: np.ndarray

    def concat(self, other: Frame) -> Frame:
        merged = {
            f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
            for f in dataclasses.fields(self)
        }
        # Stable: existing rows keep their order, added rows go after existing ones of the
        # same second.
        order = np.lexsort((merged["added"], merged["seconds"]))
        return Frame(**{k: v[order] for k, v in merged.items()})


@dataclasses.dataclass(frozen=True)
class World:
    """What the simulator drew that scenarios need."""

    seed: int
    n_days: int
    start_date: date
    customer_xy: np.ndarray
    mean_amount: np.ndarray
    mean_nb_tx_per_day: np.ndarray
    terminal_xy: np.ndarray
    radius: float
    #: (terminal, start day) of scenario 2's compromises.
    compromised_terminals: pd.DataFrame
    #: The simulator's scenario 1 (amounts above it are fraud) and scenario 2 (window length).
    fraud_amount_cents: int
    terminal_compromise_days: int


def first_day(drift: Drift, world: World) -> int:
    """The start as a simulation day; a start outside the simulated days is an error."""
    d = (drift.start - world.start_date).days
    if not 0 <= d < world.n_days:
        raise VigilError(
            f"simulation: drift {drift.scenario!r} starts {drift.start}, outside the simulated "
            f"days {world.start_date} .. {world.start_date + pd.Timedelta(days=world.n_days - 1)}"
        )
    return d


def apply(drift: Drift, frame: Frame, world: World) -> Frame:
    start = first_day(drift, world)
    rng = np.random.default_rng([world.seed, zlib.crc32(drift.scenario.encode()), start])
    if drift.scenario == AMOUNT_INFLATION:
        return _amount_inflation(frame, start)
    if drift.scenario == CARD_TESTING:
        return frame.concat(_card_testing(world, start, rng))
    return frame.concat(_activity_shift(world, start, rng))


def _amount_inflation(frame: Frame, start: int) -> Frame:
    hit = frame.day >= start
    base = frame.base_cents.copy()
    base[hit] = np.round(base[hit] * AMOUNT_INFLATION_FACTOR).astype(np.int64)
    cents = frame.cents.copy()
    multiplied = hit & (frame.cents != frame.base_cents)
    cents[hit] = base[hit]
    cents[multiplied] = base[multiplied] * (frame.cents[multiplied] // frame.base_cents[multiplied])
    return dataclasses.replace(frame, cents=cents, base_cents=base)


def _card_testing(world: World, start: int, rng: np.random.Generator) -> Frame:
    days = np.arange(start, world.n_days)
    n_cards = CARD_TESTING_CARDS_PER_DAY
    n_tests = CARD_TESTING_TESTS_PER_CARD
    n_c, n_t = len(world.customer_xy), len(world.terminal_xy)
    cards = np.stack([rng.choice(n_c, min(n_cards, n_c), replace=False) for _ in days])
    per_day = cards.shape[1]
    day = np.repeat(days, per_day * n_tests)
    customer = np.repeat(cards.ravel(), n_tests)
    bursts = len(days) * per_day
    terminal = np.concatenate(
        [rng.choice(n_t, n_tests, replace=n_tests > n_t) for _ in range(bursts)]
    )
    burst_start = rng.integers(1, c.SECONDS_PER_DAY - CARD_TESTING_BURST_S, size=bursts)
    offset = np.sort(rng.integers(0, CARD_TESTING_BURST_S, size=(bursts, n_tests)), axis=1)
    seconds = day * c.SECONDS_PER_DAY + (burst_start[:, None] + offset).ravel()
    cents = rng.integers(CARD_TESTING_MIN_CENTS, CARD_TESTING_MAX_CENTS + 1, size=len(day))
    n = len(day)
    return Frame(
        customer=customer.astype(np.int64),
        terminal=terminal.astype(np.int64),
        day=day.astype(np.int64),
        seconds=seconds.astype(np.int64),
        cents=cents.astype(np.int64),
        base_cents=cents.astype(np.int64),
        fraud=np.ones(n, dtype=np.int8),
        scenario=np.full(n, CARD_TESTING_SCENARIO, dtype=np.int8),
        added=np.ones(n, dtype=bool),
    )


def _activity_shift(world: World, start: int, rng: np.random.Generator) -> Frame:
    n_c = len(world.customer_xy)
    days = np.arange(start, world.n_days)
    neighbours = cKDTree(world.terminal_xy).query_ball_point(world.customer_xy, r=world.radius)
    n_available = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=n_c)
    offsets = np.concatenate(([0], np.cumsum(n_available)[:-1]))
    flat = np.fromiter(
        (t for n in neighbours for t in sorted(n)), dtype=np.int64, count=int(n_available.sum())
    )
    counts = rng.poisson(np.repeat(world.mean_nb_tx_per_day, len(days)).reshape(n_c, len(days)))
    cell = np.repeat(np.arange(n_c * len(days), dtype=np.int64), counts.ravel())
    customer = cell // len(days)
    day = days[cell % len(days)]
    time_in_day = rng.normal(ACTIVITY_SHIFT_HOUR * 3600, ACTIVITY_SHIFT_STD_S, size=len(cell))
    time_in_day = time_in_day.astype(np.int64)
    mean = world.mean_amount[customer]
    amount = rng.normal(mean, mean / 2)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    keep = (time_in_day > 0) & (time_in_day < c.SECONDS_PER_DAY) & (n_available[customer] > 0)
    customer, day, time_in_day, amount = customer[keep], day[keep], time_in_day[keep], amount[keep]
    pick = (rng.random(len(customer)) * n_available[customer]).astype(np.int64)
    terminal = flat[offsets[customer] + pick]
    cents = np.round(amount * 100).astype(np.int64)
    fraud = np.zeros(len(customer), dtype=np.int8)
    scenario = np.zeros(len(customer), dtype=np.int8)
    s1 = cents > world.fraud_amount_cents
    fraud[s1], scenario[s1] = 1, 1
    comp_t = world.compromised_terminals[c.TERMINAL_ID].to_numpy()
    start_t = world.compromised_terminals["START_DAY"].to_numpy()
    span = np.arange(world.terminal_compromise_days)[None, :]
    n_d = world.n_days
    covered = (comp_t[:, None] * n_d + start_t[:, None] + span)[(start_t[:, None] + span) < n_d]
    s2 = np.isin(terminal * n_d + day, covered)
    fraud[s2], scenario[s2] = 1, 2
    n = len(customer)
    return Frame(
        customer=customer,
        terminal=terminal,
        day=day.astype(np.int64),
        seconds=(day * c.SECONDS_PER_DAY + time_in_day).astype(np.int64),
        cents=cents,
        base_cents=cents.copy(),
        fraud=fraud,
        scenario=scenario,
        added=np.ones(n, dtype=bool),
    )
