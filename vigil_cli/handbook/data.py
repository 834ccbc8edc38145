"""Data preparation: features over the whole history once, then each fold's training and test
sets (the book's ``get_train_test_set``)."""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import date
from typing import Any, Final

import numpy as np
import pandas as pd

from feature_store.transforms import DEFAULT_SPEC, FeatureSpec, batch_features
from vigil import contract as c
from vigil.data.summary import TransactionSummary, summarize_transactions
from vigil.errors import DataError
from vigil.evaluation.metrics import drop_known_compromised
from vigil_cli.handbook.protocol import Fold

log = logging.getLogger(__name__)

#: Column added to the feature frame: calendar days since the data's first day.
DAY: Final = "PROTOCOL_DAY"


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """What :func:`prepare` featurized: the transactions, and the seconds their features took."""

    transactions: TransactionSummary
    feature_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions.to_dict(),
            "feature_seconds": round(self.feature_seconds, 2),
        }


@dataclasses.dataclass(frozen=True)
class BenchmarkData:
    """Features of every transaction with its protocol day, and a summary of the data."""

    frame: pd.DataFrame
    summary: PreparedData

    def day_of(self, d: date) -> int:
        first_day, _ = self.summary.transactions.span()
        return (d - first_day).days


def prepare(transactions: pd.DataFrame, spec: FeatureSpec = DEFAULT_SPEC) -> BenchmarkData:
    """Features over the whole history (one pass of ``batch_features``) plus :data:`DAY`."""
    if len(transactions) == 0:
        raise DataError("no transactions")
    t0 = time.perf_counter()
    frame = batch_features(transactions, spec)
    seconds = time.perf_counter() - t0
    calendar = transactions[c.TX_DATETIME].dt.normalize()
    first = calendar.min()
    day = ((calendar - first) // pd.Timedelta(days=1)).to_numpy(np.int64)
    frame[DAY] = day
    if c.TX_TIME_DAYS in transactions.columns:
        offsets = transactions[c.TX_TIME_DAYS].to_numpy() - day
        if len(np.unique(offsets)) > 1:
            log.warning(
                "%s does not count calendar days of %s; the protocol splits on %s",
                c.TX_TIME_DAYS,
                c.TX_DATETIME,
                c.TX_DATETIME,
            )
    return BenchmarkData(frame, PreparedData(summarize_transactions(transactions), seconds))


@dataclasses.dataclass(frozen=True)
class FoldSets:
    """Training set and (known-compromised-filtered) test set of one fold."""

    fold: Fold
    train: pd.DataFrame
    test: pd.DataFrame
    #: Test transactions dropped because their card was known to be compromised.
    n_dropped: int


def fold_sets(data: BenchmarkData, fold: Fold) -> FoldSets:
    """The book's ``get_train_test_set`` for ``fold`` on :func:`prepare`'d data."""
    day = data.frame[DAY].to_numpy()
    train_start, train_end = data.day_of(fold.train_start), data.day_of(fold.train_end)
    test_start, test_end = data.day_of(fold.test_start), data.day_of(fold.test_end)
    train = data.frame.loc[(day >= train_start) & (day < train_end)]
    # Frauds are "known" from the first training day on, through the delay period.
    history = data.frame.loc[(day >= train_start) & (day < test_start)]
    test_all = data.frame.loc[(day >= test_start) & (day < test_end)]
    test = drop_known_compromised(test_all, history, fold.delay_days, day_col=DAY)
    for what, frame in (("training", train), ("test", test)):
        if frame[c.TX_FRAUD].nunique() < 2:
            raise DataError(
                f"{fold.name}: the {what} set ({len(frame)} transactions) needs both frauds "
                "and genuine transactions"
            )
    return FoldSets(fold, train, test, len(test_all) - len(test))
