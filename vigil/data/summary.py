"""What a set of raw transactions holds: how many, how many frauds, customers and terminals, and
the time it spans. One summary, computed by :func:`summarize_transactions`, for every part that
describes data (the validation gate, the featurize step, the handbook benchmark); each adds
only what is its own (files read, splits, feature time) around it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd

from vigil import contract as c
from vigil.errors import DataError

#: Columns the summary reads; ``TX_FRAUD`` only when present.
SUMMARY_COLUMNS = (c.TX_DATETIME, c.CUSTOMER_ID, c.TERMINAL_ID)


@dataclasses.dataclass(frozen=True)
class TransactionSummary:
    """Counts and time span of a set of raw transactions."""

    #: Transactions (rows).
    rows: int
    #: Transactions with ``TX_FRAUD == 1``; None when the data carries no labels.
    frauds: int | None
    #: Distinct ``CUSTOMER_ID`` and ``TERMINAL_ID`` (nulls not counted).
    customers: int
    terminals: int
    #: Earliest and latest ``TX_DATETIME``; None when no transaction has one.
    first: pd.Timestamp | None
    last: pd.Timestamp | None

    @property
    def first_day(self) -> date | None:
        return None if self.first is None else self.first.date()

    @property
    def last_day(self) -> date | None:
        return None if self.last is None else self.last.date()

    @property
    def days(self) -> int:
        """Calendar days from the first transaction's to the last one's, both included."""
        first, last = self.first_day, self.last_day
        return 0 if first is None or last is None else (last - first).days + 1

    @property
    def fraud_rate(self) -> float | None:
        if self.frauds is None:
            return None
        return self.frauds / self.rows if self.rows else 0.0

    def span(self) -> tuple[date, date]:
        """(first day, last day); :class:`DataError` when no transaction has a time."""
        first, last = self.first_day, self.last_day
        if first is None or last is None:
            raise DataError(f"no transaction has a {c.TX_DATETIME} ({self.rows:,} rows)")
        return first, last

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times in ISO 8601; ``fraud_rate`` for people (derived, not read back)."""
        rate = self.fraud_rate
        return {
            "rows": self.rows,
            "frauds": self.frauds,
            "fraud_rate": None if rate is None else round(rate, 6),
            "customers": self.customers,
            "terminals": self.terminals,
            "first": None if self.first is None else self.first.isoformat(),
            "last": None if self.last is None else self.last.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransactionSummary:
        frauds, first, last = data["frauds"], data["first"], data["last"]
        return cls(
            rows=int(data["rows"]),
            frauds=None if frauds is None else int(frauds),
            customers=int(data["customers"]),
            terminals=int(data["terminals"]),
            first=None if first is None else pd.Timestamp(first),
            last=None if last is None else pd.Timestamp(last),
        )


def summarize_transactions(frame: pd.DataFrame) -> TransactionSummary:
    """The summary of raw transactions in the contract's columns (nulls allowed: what the
    validation gate reads may hold them)."""
    missing = [col for col in SUMMARY_COLUMNS if col not in frame.columns]
    if missing:
        raise DataError(f"cannot summarize transactions without the columns {missing}")
    when = frame[c.TX_DATETIME]
    return TransactionSummary(
        rows=len(frame),
        frauds=int(frame[c.TX_FRAUD].isin([1]).sum()) if c.TX_FRAUD in frame.columns else None,
        customers=int(frame[c.CUSTOMER_ID].nunique()),
        terminals=int(frame[c.TERMINAL_ID].nunique()),
        first=_timestamp(when.min()),
        last=_timestamp(when.max()),
    )


def _timestamp(value: Any) -> pd.Timestamp | None:
    """``Series.min()`` / ``max()`` of timestamps: NaT when there are none."""
    return None if pd.isna(value) else pd.Timestamp(value)
