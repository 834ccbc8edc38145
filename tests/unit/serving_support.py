"""What the hermetic serving tests share: a tiny simulated world, a small real LightGBM model
trained on its batch features, and an in-memory online store.

:class:`MemoryHistories` implements the history-store protocol :class:`inference.scoring.Scorer`
takes (``read``, ``append``) over dicts, with the online store's rules: appends follow the merge
rule (each transaction once, the horizon, the history bound, calls of a bounded size), statuses
are ``PRESENT`` or ``NOT_FOUND``, and an error set on the store is raised by the next calls
until cleared (an outage). Its histories start as the snapshot at :attr:`World.cutoff`, as
materialization leaves them; the transactions of the day after are the live traffic.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from feature_store.online import HistoryLimits, OnlineRead, Status, append_events
from feature_store.transforms import (
    DEFAULT_SPEC,
    CustomerHistory,
    OnlineRequest,
    TerminalHistory,
    batch_features,
    to_epoch_us,
)
from inference.schema import Transaction
from vigil import contract as c
from vigil.data.simulate import SimulationConfig, simulate
from vigil.registry import LoadedModel, ModelCard
from vigil.training import train_lightgbm

SIMULATION = SimulationConfig(n_customers=100, n_terminals=300, n_days=40, seed=7)
CUTOFF_DAY = 35
THRESHOLD = 0.3


@dataclasses.dataclass(frozen=True)
class World:
    transactions: pd.DataFrame
    #: Batch features of every transaction, indexed by TRANSACTION_ID (as a string).
    features: pd.DataFrame
    cutoff: pd.Timestamp
    model: LoadedModel

    @property
    def live(self) -> pd.DataFrame:
        """Transactions of the day after the cutoff, in event order."""
        tx = self.transactions
        keep = (tx[c.TX_DATETIME] > self.cutoff) & (
            tx[c.TX_DATETIME] <= self.cutoff + pd.Timedelta(days=1)
        )
        return tx[keep].sort_values([c.TX_DATETIME, c.TRANSACTION_ID]).reset_index(drop=True)

    def store(self) -> MemoryHistories:
        """A fresh online store holding the histories as of the cutoff."""
        tx = self.transactions[self.transactions[c.TX_DATETIME] <= self.cutoff]
        tx = tx.sort_values([c.TX_DATETIME, c.TRANSACTION_ID])
        time_us = to_epoch_us(tx[c.TX_DATETIME])
        customers = {
            str(cid): CustomerHistory(
                time_us[rows].astype(np.int64),
                tx[c.TX_AMOUNT].to_numpy(np.float64)[rows],
                [str(t) for t in tx[c.TRANSACTION_ID].to_numpy()[rows]],
            )
            for cid, rows in _groups(tx[c.CUSTOMER_ID])
        }
        available = time_us + DEFAULT_SPEC.label_delay_us
        terminals = {
            str(tid): TerminalHistory(
                available[rows].astype(np.int64), tx[c.TX_FRAUD].to_numpy(np.int64)[rows]
            )
            for tid, rows in _groups(tx[c.TERMINAL_ID])
        }
        return MemoryHistories(customers, terminals)


def _groups(keys: pd.Series) -> list[tuple[object, np.ndarray]]:
    values = keys.to_numpy()
    return [(key, np.flatnonzero(values == key)) for key in pd.unique(values)]


@functools.cache
def world() -> World:
    """Built once per test process (about a second); treat it as read-only."""
    transactions = simulate(SIMULATION).transactions
    cutoff = pd.Timestamp(SIMULATION.start_date) + pd.Timedelta(days=CUTOFF_DAY)
    features = batch_features(transactions)
    train = features[features[c.TX_DATETIME] <= cutoff]
    trained = train_lightgbm(train, num_boost_round=20, feature_names=DEFAULT_SPEC.features,
                             params={"num_threads": 1, "min_child_samples": 10})
    card = ModelCard(
        name="fraud_unit",
        version=4,
        sha256="0" * 64,
        threshold=THRESHOLD,
        feature_service="fraud_v1",
        feature_names=tuple(DEFAULT_SPEC.features),
        train_start=SIMULATION.start_date,
        train_end=cutoff.date(),
        metrics={},
        git_commit="unknown",
        run_id="unit",
        source="memory",
        aliases=("champion",),
        created=datetime(2018, 5, 6, tzinfo=UTC),
    )
    indexed = features.set_index(features[c.TRANSACTION_ID].astype(str))
    return World(transactions, indexed, cutoff, LoadedModel(trained.booster, card))


def transactions_of(rows: pd.DataFrame) -> list[Transaction]:
    """Scoring transactions for raw rows, in row order."""
    time_us = to_epoch_us(rows[c.TX_DATETIME])
    return [
        Transaction(str(t), int(u), str(cu), str(te), float(a))
        for t, u, cu, te, a in zip(
            rows[c.TRANSACTION_ID], time_us, rows[c.CUSTOMER_ID], rows[c.TERMINAL_ID],
            rows[c.TX_AMOUNT], strict=True,
        )
    ]


class MemoryHistories:
    """The online store in memory (see the module docstring)."""

    def __init__(self, customers: dict[str, CustomerHistory],
                 terminals: dict[str, TerminalHistory],
                 limits: HistoryLimits | None = None):
        self.customers = customers
        self.terminals = terminals
        self.limits = limits or HistoryLimits()
        #: Raised by every read / append while set.
        self.read_error: BaseException | None = None
        self.append_error: BaseException | None = None
        #: Set: appends are written, then this is raised (a reply lost after the write).
        self.append_error_after_write: BaseException | None = None
        self.reads = 0
        self.appends = 0
        #: Transactions per append call, in call order.
        self.append_sizes: list[int] = []

    def read(self, requests: Sequence[OnlineRequest]) -> OnlineRead:
        self.reads += 1
        if self.read_error is not None:
            raise self.read_error
        customers = [self.customers.get(r.customer_id) for r in requests]
        terminals = [self.terminals.get(r.terminal_id) for r in requests]
        return OnlineRead(
            customers=[h if h is not None else CustomerHistory.empty() for h in customers],
            terminals=[h if h is not None else TerminalHistory.empty() for h in terminals],
            customer_status=[Status.PRESENT if h is not None else Status.NOT_FOUND
                             for h in customers],
            terminal_status=[Status.PRESENT if h is not None else Status.NOT_FOUND
                             for h in terminals],
        )

    def append(self, requests: Sequence[OnlineRequest], read: OnlineRead | None = None) -> None:
        self.appends += 1
        self.append_sizes.append(len(requests))
        if self.append_error is not None:
            raise self.append_error
        events: dict[str, list[tuple[int, float, str]]] = {}
        for r in requests:
            events.setdefault(r.customer_id, []).append((r.time_us, r.amount, r.transaction_id))
        for customer_id, customer_events in events.items():
            history = self.customers.get(customer_id, CustomerHistory.empty())
            self.customers[customer_id] = append_events(
                history, customer_events, DEFAULT_SPEC.customer_horizon_us, self.limits
            )
        if self.append_error_after_write is not None:
            raise self.append_error_after_write

    def ids(self, customer_id: str) -> list[str]:
        history = self.customers.get(customer_id)
        return list(history.transaction_id) if history is not None else []
