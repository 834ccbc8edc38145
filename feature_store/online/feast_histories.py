"""Histories of ``fraud_v1_online`` through Feast's public API, for any Feast online store.

:class:`FeastHistories` serves a laptop without Redis (Feast's SQLite store) and is the
reference the Redis fast path (:mod:`feature_store.online.redis_histories`) is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureStore
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_store import names as n
from feature_store.online.codec import entity_key
from feature_store.online.history_store import OnlineRead, Status, status
from feature_store.online.limits import HistoryLimits, newest, newest_labels, newest_rows
from feature_store.online.merge import append_events
from feature_store.transforms import (
    DEFAULT_SPEC,
    CustomerHistory,
    FeatureSpec,
    OnlineRequest,
    TerminalHistory,
)


class FeastHistories:
    """The same histories through Feast's public API, for any Feast online store.

    Slower than :class:`RedisHistories` (one Feast call per view, no compare-and-set), meant
    for a single process on a laptop (SQLite) and as the reference the fast path is tested
    against.
    """

    def __init__(
        self, store: FeatureStore, spec: FeatureSpec = DEFAULT_SPEC,
        limits: HistoryLimits | None = None,
    ):
        self.store = store
        self.spec = spec
        self.limits = limits or HistoryLimits()
        self.customer_ttl_us = spec.customer_horizon_us
        self.terminal_ttl_us = spec.label_delay_us

    def read(self, requests: Sequence[OnlineRequest]) -> OnlineRead:
        response = self.store.get_online_features(
            features=[f"{n.CUSTOMER_HISTORY}:{f}" for f in n.CUSTOMER_HISTORY_FIELDS]
            + [f"{n.TERMINAL_HISTORY}:{f}" for f in n.TERMINAL_HISTORY_FIELDS],
            entity_rows=[
                {n.CUSTOMER_ID: r.customer_id, n.TERMINAL_ID: r.terminal_id} for r in requests
            ],
        )
        proto = response.proto
        index = {name: i for i, name in enumerate(proto.metadata.feature_names.val)}
        read = OnlineRead([], [], [], [])
        for row, req in enumerate(requests):

            def value(name: str, row: int = row) -> tuple[ValueProto, int, Any]:
                vector = proto.results[index[name]]
                ts = vector.event_timestamps[row]
                return (
                    vector.values[row],
                    vector.statuses[row],
                    ts.seconds * 1_000_000 + ts.nanos // 1000,
                )

            times, c_found, c_ts = value(n.TX_TIMESTAMPS_US)
            c_present = c_found == 1 and times.WhichOneof("val") is not None
            c_status = status(c_present, c_ts, req.time_us, self.customer_ttl_us)
            if c_status is Status.PRESENT:
                amounts, _, _ = value(n.TX_AMOUNTS)
                ids, _, _ = value(n.TX_IDS)
                history = newest(CustomerHistory(
                    np.array(times.int64_list_val.val, np.int64),
                    np.array(amounts.double_list_val.val, np.float64),
                    list(ids.string_list_val.val),
                ), self.limits.max_entries)
            else:
                history = CustomerHistory.empty()
            available, t_found, t_ts = value(n.LABEL_AVAILABLE_US)
            t_present = t_found == 1 and available.WhichOneof("val") is not None
            t_status = status(t_present, t_ts, req.time_us, self.terminal_ttl_us)
            if t_status is Status.PRESENT:
                fraud, _, _ = value(n.LABEL_FRAUD)
                terminal = newest_labels(TerminalHistory(
                    np.array(available.int64_list_val.val, np.int64),
                    np.array(fraud.int64_list_val.val, np.int64),
                ), self.limits.max_entries)
            else:
                terminal = TerminalHistory.empty()
            read.customers.append(history)
            read.terminals.append(terminal)
            read.customer_status.append(c_status)
            read.terminal_status.append(t_status)
            if c_status is not Status.NOT_FOUND:
                read.stored[entity_key(n.CUSTOMER_ID, req.customer_id, "")] = (history, c_ts)
        return read

    def append(self, requests: Sequence[OnlineRequest], read: OnlineRead | None = None) -> None:
        read = read or self.read(requests)
        events: dict[str, list[tuple[int, float, str]]] = {}
        for req in requests:
            events.setdefault(req.customer_id, []).append(
                (req.time_us, req.amount, req.transaction_id)
            )
        merged: dict[str, tuple[CustomerHistory, int]] = {}
        for customer_id, customer_events in events.items():
            key = entity_key(n.CUSTOMER_ID, customer_id, "")
            base, stored_us = read.stored.get(key, (CustomerHistory.empty(), 0))
            history = append_events(
                base, customer_events, self.spec.customer_horizon_us, self.limits
            )
            latest = max(t for t, _, _ in customer_events)
            merged[customer_id] = (history, max(stored_us, latest))
        frame = pd.DataFrame(
            {
                n.CUSTOMER_ID: list(merged),
                n.TX_TIMESTAMPS_US: [h.time_us.tolist() for h, _ in merged.values()],
                n.TX_AMOUNTS: [h.amount.tolist() for h, _ in merged.values()],
                n.TX_IDS: [h.transaction_id for h, _ in merged.values()],
                n.EVENT_TIMESTAMP: pd.to_datetime(
                    [ts for _, ts in merged.values()], unit="us", utc=True
                ),
            }
        )
        frame[n.CREATED] = pd.Timestamp.now(tz="UTC")
        self.store.push(n.CUSTOMER_PUSH_SOURCE, frame)

    def write_customer_snapshot(self, snapshot: pa.Table | pd.DataFrame) -> int:
        """Each customer with its newest ``limits.max_entries`` transactions."""
        columns = [n.TX_TIMESTAMPS_US, n.TX_AMOUNTS, n.TX_IDS]
        frame = self._bounded(snapshot, columns)
        self.store.write_to_online_store(n.CUSTOMER_HISTORY, frame)
        return len(frame)

    def write_terminal_snapshot(self, snapshot: pa.Table | pd.DataFrame) -> int:
        """Each terminal with its newest ``limits.max_entries`` labels."""
        frame = self._bounded(snapshot, [n.LABEL_AVAILABLE_US, n.LABEL_FRAUD])
        self.store.write_to_online_store(n.TERMINAL_HISTORY, frame)
        return len(frame)

    def _bounded(self, snapshot: pa.Table | pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        table = (snapshot if isinstance(snapshot, pa.Table)
                 else pa.Table.from_pandas(snapshot, preserve_index=False))
        bounded = newest_rows(table, columns, self.limits.max_entries)
        if bounded is table and isinstance(snapshot, pd.DataFrame):
            return snapshot
        return bounded.to_pandas()
