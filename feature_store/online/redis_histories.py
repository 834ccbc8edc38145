"""Histories of ``fraud_v1_online`` in Redis, in Feast's own layout, on the serving path.

:class:`RedisHistories` reads and writes what Feast's Redis online store reads and writes
(:mod:`feature_store.online.codec`), so ``feast`` clients read what it writes and the other way
round. It exists because the serving path needs what Feast's generic client does not give: one
pipelined round trip for a whole request batch (:class:`~feature_store.online.connection.
DirectConnection`), statuses judged against the *request's* time, and atomic appends (a Lua
script edits the stored values inside Redis; compare-and-set as the fallback, both applying
:func:`~feature_store.online.merge.merge_customer`'s rule) so concurrent workers never lose a
customer's transaction. Batch snapshots load by script too, hundreds of keys per call.

Every history is bounded (:class:`~feature_store.online.limits.HistoryLimits`): snapshots are
written with each entity's newest ``max_entries`` entries, appends keep at most that many,
reads never hand out more, and one call of the append script carries at most
``append_max_events`` transactions (a customer's backlog is split into several calls), so no
call holds Redis for longer than a bounded time, whatever one card sends.

On Redis Cluster (a ``RedisCluster`` client) the same commands go through
:class:`~feature_store.online.connection.ClusterConnection`: every script call's keys share one
hash slot (a snapshot chunk is split by slot), each node's commands are pipelined, and reads
stay one round trip (per node, concurrently). ``append_replicas`` > 0 ends every append with
``WAIT``: an append not confirmed by that many replicas raises
:class:`~feature_store.online.connection.NotReplicatedError` (the caller keeps it queued and
retries; appends are idempotent), so a confirmed append survives its primary's failover.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot

from feature_store import names as n
from feature_store import wire
from feature_store.online import scripts
from feature_store.online.codec import (
    KeyEncoder,
    decode_customer,
    decode_terminal,
    encode_customer,
    field_name,
    timestamp_bytes,
    timestamp_field,
    timestamp_us,
)
from feature_store.online.connection import ClusterConnection, DirectConnection, NotReplicatedError
from feature_store.online.history_store import OnlineRead, Status, status
from feature_store.online.limits import HistoryLimits, newest, newest_labels, newest_rows
from feature_store.online.merge import HISTORY_SLACK_US, append_events
from feature_store.online.scripts import APPEND_TIME_US
from feature_store.transforms import (
    DEFAULT_SPEC,
    CustomerHistory,
    FeatureSpec,
    OnlineRequest,
    TerminalHistory,
)

_CAS_RETRIES = 20
_DOUBLE = struct.Struct("<d")
#: Keys per script call: each call holds Redis for its duration (about 1-3 ms at this size),
#: which concurrent online reads wait out.
_SNAPSHOT_KEYS_PER_CALL = 200
_CUSTOMER_LISTS = [n.TX_TIMESTAMPS_US, n.TX_AMOUNTS, n.TX_IDS]
_TERMINAL_LISTS = [n.LABEL_AVAILABLE_US, n.LABEL_FRAUD]


class RedisHistories:
    """Histories in Redis, in Feast's layout (see module docstring)."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        project: str,
        spec: FeatureSpec = DEFAULT_SPEC,
        *,
        customer_ttl_us: int | None = None,
        terminal_ttl_us: int | None = None,
        limits: HistoryLimits | None = None,
        append_replicas: int = 0,
        append_wait_ms: int = 500,
    ):
        """``append_replicas``: replicas that must confirm each append within
        ``append_wait_ms`` (see the module docstring)."""
        self.client = client
        self.project = project
        self.spec = spec
        self.limits = limits or HistoryLimits()
        self.customer_ttl_us = customer_ttl_us or spec.customer_horizon_us
        self.terminal_ttl_us = terminal_ttl_us or spec.label_delay_us
        self._c_fields = [field_name(n.CUSTOMER_HISTORY, f) for f in n.CUSTOMER_HISTORY_FIELDS]
        self._c_ts = timestamp_field(n.CUSTOMER_HISTORY)
        self._t_fields = [field_name(n.TERMINAL_HISTORY, f) for f in n.TERMINAL_HISTORY_FIELDS]
        self._t_ts = timestamp_field(n.TERMINAL_HISTORY)
        registrar = cast(redis.Redis, client)  # RedisCluster registers them alike
        self._cas = registrar.register_script(scripts.CAS)
        self._append = registrar.register_script(scripts.APPEND)
        self._snapshot = registrar.register_script(scripts.SNAPSHOT)
        self._terminals = registrar.register_script(scripts.TERMINALS)
        self.customer_key = KeyEncoder(n.CUSTOMER_ID, project)
        self.terminal_key = KeyEncoder(n.TERMINAL_ID, project)
        self._wait = (append_replicas, append_wait_ms) if append_replicas > 0 else None
        self.cluster: ClusterConnection | None = None
        if isinstance(client, RedisCluster):
            self.cluster = ClusterConnection(client)
            self._sha = {
                id(script): self.cluster.script(text)
                for script, text in ((self._cas, scripts.CAS), (self._append, scripts.APPEND),
                                     (self._snapshot, scripts.SNAPSHOT),
                                     (self._terminals, scripts.TERMINALS))
            }
        else:
            self._direct = DirectConnection(client)

    def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands in one round trip (per node on a cluster), their replies in order."""
        if self.cluster is not None:
            return self.cluster.exchange(commands)
        return self._direct.exchange(commands)

    def _run(
        self, script: Script, calls: Sequence[tuple[list[bytes], Sequence[Any]]],
        *, wait: bool = False,
    ) -> list[Any]:
        """``script`` once per (keys, args), pipelined (on a cluster, grouped by node: the keys
        of one call must share a hash slot); ``wait``: confirmed by ``append_replicas``."""
        waiting = self._wait if wait else None
        if self.cluster is not None:
            sha = self._sha[id(script)]
            return self.cluster.exchange(
                [(b"EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls], wait=waiting
            )
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        if waiting is not None:
            pipe.execute_command("WAIT", *waiting)
        if not calls and waiting is None:
            return []
        results = pipe.execute()
        if waiting is not None:
            acknowledged = results.pop()
            if acknowledged < waiting[0]:
                raise NotReplicatedError(
                    f"WAIT: {acknowledged} of {waiting[0]} replicas confirmed the append"
                )
        return results

    def _slot_batches(self, keys: Sequence[bytes], size: int) -> list[list[int]]:
        """Positions of ``keys`` in script calls of at most ``size`` keys: consecutive on one
        server; on a cluster, keys of one hash slot per call."""
        if self.cluster is None:
            return [list(range(lo, min(lo + size, len(keys)))) for lo in range(0, len(keys), size)]
        slots: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            slots.setdefault(key_slot(key), []).append(i)
        return [rows[lo : lo + size] for rows in slots.values() for lo in range(0, len(rows), size)]

    # reads ----------------------------------------------------------------------------------
    def read(self, requests: Sequence[OnlineRequest]) -> OnlineRead:
        """Histories of every request's customer and terminal, in one round trip."""
        pairs = [
            (self.customer_key(r.customer_id), self.terminal_key(r.terminal_id)) for r in requests
        ]
        c_keys = list(dict.fromkeys(ck for ck, _ in pairs))
        t_keys = list(dict.fromkeys(tk for _, tk in pairs))
        replies = self._exchange(
            [(b"HMGET", key, *self._c_fields, self._c_ts) for key in c_keys]
            + [(b"HMGET", key, *self._t_fields, self._t_ts) for key in t_keys]
        )
        return self._assemble(requests, pairs, c_keys, t_keys, replies)

    def _assemble(
        self,
        requests: Sequence[OnlineRequest],
        pairs: list[tuple[bytes, bytes]],
        c_keys: list[bytes],
        t_keys: list[bytes],
        replies: list[list[bytes | None]],
    ) -> OnlineRead:
        bound = self.limits.max_entries
        customers: dict[bytes, tuple[CustomerHistory, int] | None] = {}
        tokens: dict[bytes, bytes] = {}
        for key, (times, amounts, ids, ts) in zip(c_keys, replies[: len(c_keys)], strict=True):
            tokens[key] = ids or b""
            if times is None or amounts is None or ids is None or ts is None:
                customers[key] = None
            else:
                history = newest(decode_customer(times, amounts, ids), bound)
                customers[key] = (history, timestamp_us(ts))
        terminals: dict[bytes, tuple[TerminalHistory, int] | None] = {}
        for key, (available, fraud, ts) in zip(t_keys, replies[len(c_keys) :], strict=True):
            if available is None or fraud is None or ts is None:
                terminals[key] = None
            else:
                labels = newest_labels(decode_terminal(available, fraud), bound)
                terminals[key] = (labels, timestamp_us(ts))
        read = OnlineRead([], [], [], [], tokens=tokens)
        for req, (ck, tk) in zip(requests, pairs, strict=True):
            c_entry, t_entry = customers[ck], terminals[tk]
            if c_entry is not None:
                read.stored[ck] = c_entry
            c_status = status(
                c_entry is not None, c_entry[1] if c_entry else 0, req.time_us, self.customer_ttl_us
            )
            t_status = status(
                t_entry is not None, t_entry[1] if t_entry else 0, req.time_us, self.terminal_ttl_us
            )
            read.customer_status.append(c_status)
            read.terminal_status.append(t_status)
            read.customers.append(
                c_entry[0] if c_entry and c_status is Status.PRESENT else CustomerHistory.empty()
            )
            read.terminals.append(
                t_entry[0] if t_entry and t_status is Status.PRESENT else TerminalHistory.empty()
            )
        return read

    # near-real-time appends -----------------------------------------------------------------
    def append(self, requests: Sequence[OnlineRequest], read: OnlineRead | None = None) -> None:
        """Add scored transactions to their customers' histories, atomically per customer.

        Script calls edit the stored values inside Redis, each with at most
        ``limits.append_max_events`` of one customer's transactions (a customer's backlog takes
        several calls, in order: :func:`~feature_store.online.merge.append_events`); a customer
        whose stored values the script does not handle goes through :meth:`_append_cas`, with
        ``read`` (from :meth:`read` of the same requests) saving it a round trip. Idempotent:
        a transaction whose id the history holds is not added again, so a call that failed
        half-way (a timeout) can be repeated.
        """
        events: dict[bytes, list[tuple[int, float, str]]] = {}
        for r in requests:
            events.setdefault(self.customer_key(r.customer_id), []).append(
                (r.time_us, r.amount, r.transaction_id)
            )
        keep_us = self.spec.customer_horizon_us + HISTORY_SLACK_US
        step, bound = self.limits.append_max_events, self.limits.max_entries
        scripted = [k for k, evs in events.items() if all(t in APPEND_TIME_US for t, _, _ in evs)]
        calls: list[tuple[list[bytes], list[bytes | int | str]]] = []
        for key in scripted:
            evs = events[key]
            for start in range(0, len(evs), step):
                args: list[bytes | int | str] = [*self._c_fields, self._c_ts, keep_us, bound]
                for time_us, amount, tid in evs[start : start + step]:
                    args += [time_us, _DOUBLE.pack(amount), tid]
                calls.append(([key], args))
        results = self._run(self._append, calls, wait=True) if calls else []
        refused = {keys[0] for (keys, _), ok in zip(calls, results, strict=True) if not ok}
        done = set(scripted) - refused
        # A customer any call refused goes through compare-and-set with all its events: what
        # an earlier call of it wrote is skipped there as known.
        rest = {k: evs for k, evs in events.items() if k not in done}
        if rest:
            self._append_cas(rest, read)

    def _append_cas(
        self, events: dict[bytes, list[tuple[int, float, str]]], read: OnlineRead | None
    ) -> None:
        """Read, merge and encode in Python, then compare-and-set; on a concurrent write the
        customer is read again and the append retried."""
        if read is None:
            current = self._read_customers(list(events))
        else:
            current = {k: (read.stored.get(k), read.tokens.get(k, b"")) for k in events}
        pending = dict(events)
        for _ in range(_CAS_RETRIES):
            order = list(pending)
            calls: list[tuple[list[bytes], list[bytes]]] = []
            for key in order:
                stored, token = current[key]
                base, stored_us = stored if stored else (CustomerHistory.empty(), 0)
                merged = append_events(
                    base, pending[key], self.spec.customer_horizon_us, self.limits
                )
                latest = max(t for t, _, _ in pending[key])
                args: list[bytes] = [self._c_fields[2], token]
                for name, value in zip(self._c_fields, encode_customer(merged), strict=True):
                    args += [name, value]
                args += [self._c_ts, timestamp_bytes(max(stored_us, latest))]
                calls.append(([key], args))
            results = self._run(self._cas, calls, wait=True)
            failed = [k for k, ok in zip(order, results, strict=True) if not ok]
            if not failed:
                return
            pending = {k: pending[k] for k in failed}
            current = self._read_customers(failed)
        raise redis.WatchError(f"could not append to {len(pending)} customer histories")

    def _read_customers(
        self, keys: list[bytes]
    ) -> dict[bytes, tuple[tuple[CustomerHistory, int] | None, bytes]]:
        if self.cluster is not None:
            replies = self.cluster.exchange(
                [(b"HMGET", key, *self._c_fields, self._c_ts) for key in keys]
            )
        else:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, [*self._c_fields, self._c_ts])
            replies = pipe.execute()
        out: dict[bytes, tuple[tuple[CustomerHistory, int] | None, bytes]] = {}
        for key, (times, amounts, ids, ts) in zip(keys, replies, strict=True):
            if times is None or amounts is None or ids is None or ts is None:
                out[key] = (None, ids or b"")
            else:
                history = newest(decode_customer(times, amounts, ids), self.limits.max_entries)
                out[key] = ((history, timestamp_us(ts)), ids)
        return out

    # batch materialization ------------------------------------------------------------------
    def write_customer_snapshot(self, snapshot: pa.Table | pd.DataFrame, chunk: int = 1_000) -> int:
        """Load a batch snapshot, keeping events appended online after its cutoff.

        Values are encoded a chunk of rows at a time (:mod:`feature_store.wire`) and written by
        a script, atomically, hundreds of keys per call, while the next chunk is encoded. A
        customer whose stored history is newer than the cutoff (the server appended since) is
        left to :meth:`_merge_snapshot_row`. Each customer keeps its newest
        ``limits.max_entries`` transactions.
        """
        table = newest_rows(_as_table(snapshot), _CUSTOMER_LISTS, self.limits.max_entries)
        ids = table.column(n.CUSTOMER_ID).to_pylist()
        cutoffs = _column_us(table.column(n.EVENT_TIMESTAMP))
        sent: list[tuple[Future[list[Any]], list[list[int]], pa.Table, list[bytes], list[int]]]
        sent = []
        with ThreadPoolExecutor(max_workers=1) as sender:
            for start in range(0, len(ids), chunk):
                part = table.slice(start, chunk)
                times = wire.encode_int64_lists(part.column(n.TX_TIMESTAMPS_US))
                amounts = wire.encode_double_lists(part.column(n.TX_AMOUNTS))
                tids = wire.encode_string_lists(part.column(n.TX_IDS))
                keys = [self.customer_key(str(i)) for i in ids[start : start + chunk]]
                part_cutoffs = cutoffs[start : start + chunk].tolist()
                batches = self._slot_batches(keys, _SNAPSHOT_KEYS_PER_CALL)
                calls: list[tuple[list[bytes], list[bytes | int]]] = []
                for rows in batches:
                    args: list[bytes | int] = [*self._c_fields, self._c_ts]
                    for i in rows:
                        cutoff_us = part_cutoffs[i]
                        args += [
                            times[i],
                            amounts[i],
                            tids[i],
                            timestamp_bytes(cutoff_us),
                            cutoff_us // 1_000_000,
                            (cutoff_us % 1_000_000) * 1000,
                        ]
                    calls.append(([keys[i] for i in rows], args))
                future = sender.submit(self._run, self._snapshot, calls)
                sent.append((future, batches, part, keys, part_cutoffs))
        for future, batches, part, keys, part_cutoffs in sent:
            for rows, skipped in zip(batches, future.result(), strict=True):
                for k in skipped:
                    row = rows[int(k) - 1]
                    self._merge_snapshot_row(keys[row], part, row, part_cutoffs[row])
        return len(ids)

    def _merge_snapshot_row(self, key: bytes, part: pa.Table, row: int, cutoff_us: int) -> None:
        """Snapshot row plus the events stored after its cutoff, compare-and-set."""
        snapshot = CustomerHistory(
            np.asarray(part.column(n.TX_TIMESTAMPS_US)[row].values, np.int64),
            np.asarray(part.column(n.TX_AMOUNTS)[row].values, np.float64),
            [str(t) for t in part.column(n.TX_IDS)[row].values.to_pylist()],
        )
        for _ in range(_CAS_RETRIES):
            stored, token = self._read_customers([key])[key]
            merged, stored_us = snapshot, 0
            if stored is not None:
                old, stored_us = stored
                later = old.time_us > cutoff_us
                events = zip(
                    old.time_us[later].tolist(),
                    old.amount[later].tolist(),
                    [t for t, k in zip(old.transaction_id, later, strict=True) if k],
                    strict=True,
                )
                merged = append_events(
                    snapshot, list(events), self.spec.customer_horizon_us, self.limits
                )
            args: list[bytes] = [self._c_fields[2], token]
            for name, value in zip(self._c_fields, encode_customer(merged), strict=True):
                args += [name, value]
            args += [self._c_ts, timestamp_bytes(max(cutoff_us, stored_us))]
            if self._run(self._cas, [([key], args)])[0]:
                return
        raise redis.WatchError(f"could not merge the snapshot of {key!r}")

    def write_terminal_snapshot(self, snapshot: pa.Table | pd.DataFrame, chunk: int = 2_500) -> int:
        """Load a batch snapshot of terminal labels (replaces the previous one), by a script
        hundreds of keys per call (on a cluster, ``HSET`` per key, pipelined per node); each
        chunk is sent while the next one is encoded. Each
        terminal keeps its newest ``limits.max_entries`` labels."""
        table = newest_rows(_as_table(snapshot), _TERMINAL_LISTS, self.limits.max_entries)
        ids = table.column(n.TERMINAL_ID).to_pylist()
        cutoffs = _column_us(table.column(n.EVENT_TIMESTAMP)).tolist()
        a_field, f_field = self._t_fields
        with ThreadPoolExecutor(max_workers=1) as sender:
            sent: list[Future[list[Any]]] = []
            for start in range(0, len(ids), chunk):
                part = table.slice(start, chunk)
                available = wire.encode_int64_lists(part.column(n.LABEL_AVAILABLE_US))
                fraud = wire.encode_int64_lists(part.column(n.LABEL_FRAUD))
                keys = [self.terminal_key(str(tid)) for tid in ids[start : start + chunk]]
                if self.cluster is not None:
                    # a slot rarely holds two of a chunk's keys: one HSET per key, no script
                    commands = [
                        (b"HSET", key, a_field, available[i], f_field, fraud[i], self._t_ts,
                         timestamp_bytes(cutoffs[start + i]))
                        for i, key in enumerate(keys)
                    ]
                    sent.append(sender.submit(self.cluster.exchange, commands))
                    continue
                calls: list[tuple[list[bytes], list[bytes]]] = []
                for rows in self._slot_batches(keys, _SNAPSHOT_KEYS_PER_CALL):
                    args: list[bytes] = [a_field, f_field, self._t_ts]
                    for i in rows:
                        args += [available[i], fraud[i], timestamp_bytes(cutoffs[start + i])]
                    calls.append(([keys[i] for i in rows], args))
                sent.append(sender.submit(self._run, self._terminals, calls))
            for future in sent:
                future.result()
        return len(ids)


def _as_table(snapshot: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(snapshot, pa.Table):
        return snapshot
    return pa.Table.from_pandas(snapshot, preserve_index=False)


def _column_us(column: pa.ChunkedArray) -> np.ndarray:
    """Timestamps of an Arrow column as int64 epoch microseconds (UTC)."""
    return column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
