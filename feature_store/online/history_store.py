"""What an online history store offers: reads judged at each request's time, appends, and
batch snapshot loads (:class:`HistoryStore`), and what a read returns (:class:`OnlineRead`)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Protocol

import pandas as pd
import pyarrow as pa

from feature_store.transforms import CustomerHistory, OnlineRequest, TerminalHistory


class Status(enum.StrEnum):
    PRESENT = "PRESENT"
    NOT_FOUND = "NOT_FOUND"
    OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"


@dataclasses.dataclass
class OnlineRead:
    """Histories for a batch of requests, aligned with the requests.

    A NOT_FOUND or OUTSIDE_MAX_AGE history is replaced by the empty history: the defined
    default, equal to what batch computes for an entity without transactions or labels.
    """

    customers: list[CustomerHistory]
    terminals: list[TerminalHistory]
    customer_status: list[Status]
    terminal_status: list[Status]
    #: Raw TX_IDS bytes per customer key as read; the compare-and-set token for appends.
    tokens: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    stored: dict[bytes, tuple[CustomerHistory, int]] = dataclasses.field(default_factory=dict)


class HistoryStore(Protocol):
    def read(self, requests: Sequence[OnlineRequest]) -> OnlineRead: ...

    def append(self, requests: Sequence[OnlineRequest], read: OnlineRead | None = None) -> None: ...

    def write_customer_snapshot(self, snapshot: pa.Table | pd.DataFrame) -> int: ...

    def write_terminal_snapshot(self, snapshot: pa.Table | pd.DataFrame) -> int: ...


def status(found: bool, stored_us: int, at_us: int, ttl_us: int) -> Status:
    """A history's status for a request at ``at_us``: its stored timestamp against the TTL."""
    if not found:
        return Status.NOT_FOUND
    if at_us - stored_us > ttl_us:
        return Status.OUTSIDE_MAX_AGE
    return Status.PRESENT
