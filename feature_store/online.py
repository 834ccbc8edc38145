"""Online side of the feature store: the histories of ``fraud_v1_online`` in Redis.

:class:`RedisHistories` reads and writes Feast's own Redis layout (entity key serialization v3,
murmur3 field names, ``ValueProto`` values, ``_ts:<view>`` timestamps), so ``feast`` clients read
what it writes and the other way round. It exists because the serving path needs what Feast's
generic client does not give: one pipelined round trip for a whole request batch, statuses
judged against the *request's* time, and atomic appends (a Lua script edits the stored values
inside Redis; compare-and-set as the fallback) so concurrent workers never lose a customer's
transaction.

:class:`FeastHistories` does the same through Feast's public API for any other online store
(SQLite on a laptop without Redis).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import struct
import threading
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import redis
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key, serialize_entity_key_prefix
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import (
    DoubleList,
    Int64List,
    StringList,
    ValueType,
)
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

from feature_store import definitions as d
from feature_store import wire
from feature_store.transforms import (
    DEFAULT_SPEC,
    US_PER_DAY,
    CustomerHistory,
    FeatureSpec,
    OnlineRequest,
    TerminalHistory,
)

CUSTOMER_VIEW = "customer_history"
TERMINAL_VIEW = "terminal_history"
CUSTOMER_FIELDS = ("TX_TIMESTAMPS_US", "TX_AMOUNTS", "TX_IDS")
TERMINAL_FIELDS = ("LABEL_AVAILABLE_US", "LABEL_FRAUD")
#: Extra history kept beyond the longest window, for requests that arrive a little late.
HISTORY_SLACK_US = US_PER_DAY
KEY_SERIALIZATION = 3
_STRING_TYPE = int(ValueType.STRING).to_bytes(4, "little")
_CAS_RETRIES = 20

# Compare-and-set of a customer's history: write only if TX_IDS still holds what was read.
_CAS_SCRIPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == false then current = '' end
if current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
"""


# Lua shared by the scripts that read protobuf in Redis. ``varint``: the varint at s[i] and the
# index after it; nil when it runs off the end or is not exact in a Lua number (>= 2^53).
# ``stamp``: seconds and nanos of a serialized google.protobuf.Timestamp; nil for anything else.
_LUA_PROTOBUF = """
local EXACT = 9007199254740992
local function varint(s, i)
  local value, scale = 0, 1
  while true do
    local b = string.byte(s, i)
    if b == nil then return nil end
    i = i + 1
    value = value + (b % 128) * scale
    if b < 128 then
      if value >= EXACT then return nil end
      return value, i
    end
    scale = scale * 128
    if scale >= EXACT then return nil end
  end
end
local function stamp(s)
  local seconds, nanos, i = 0, 0, 1
  while i <= #s do
    local tag = string.byte(s, i)
    local v
    v, i = varint(s, i + 1)
    if v == nil then return nil end
    if tag == 8 then seconds = v elseif tag == 16 then nanos = v else return nil end
  end
  return seconds, nanos
end
"""


# Append scored transactions to a customer's history inside Redis, atomically: the stored
# ValueProto bytes are edited in place of the Python read-merge-encode-compare-and-set, so the
# server's appender sends a few small arguments instead of the whole history, and no retry is
# ever needed. Same rule and bytes as merge_customer + encode_customer (tested byte for byte):
# events whose id the history holds (or an earlier event of the call) are skipped; the leading
# entries at or before the call's newest event time minus ``keep`` are dropped, as are new
# events before that; the timestamp becomes max(stored, the call's newest event time).
# Redis's Lua takes ~75 ns per byte a loop visits (a 60-day history is a few KB), so the script
# never walks the whole history: it checks each value's envelope, decodes only the dropped
# leading entries, and finds ids with string.find, decoding id records only up to a match (to
# tell a record from the same bytes inside a longer id). That the lists have equal lengths is
# therefore not checked here (every writer keeps it). Returns 0, writing nothing, for values it
# does not handle (an envelope or an entry it reads that is not canonical, a number not exact
# in a Lua double): the caller then takes the compare-and-set path. KEYS[1]: the customer key;
# ARGV: times, amounts, ids and timestamp fields, keep (us), then per event: time (decimal us,
# 0 <= t < 2^53), amount (8 bytes, little-endian double), transaction id.
_APPEND_SCRIPT = _LUA_PROTOBUF + """
local function encode(v)
  local out = {}
  while v >= 128 do
    out[#out + 1] = string.char(v % 128 + 128)
    v = math.floor(v / 128)
  end
  out[#out + 1] = string.char(v)
  return table.concat(out)
end
-- where the payload of a length-delimited field ``tag`` spanning all of value[at..] starts
local function field(value, at, tag)
  if string.byte(value, at) ~= tag then return nil end
  local n, i = varint(value, at + 1)
  if n == nil or i + n - 1 ~= #value then return nil end
  return i
end
-- where a list value's entries start: Value.<tag> { repeated entries }; packed numbers are one
-- more length-delimited field (1) inside
local function entries(value, tag)
  local i = field(value, 1, tag)
  if i == nil or i > #value or tag == 98 then return i end
  return field(value, i, 10)
end
-- a list value of ``kept`` (encoded entries) then ``new`` ones
local function list_value(tag, kept, new)
  local n = #kept
  for k = 1, #new do n = n + #new[k] end
  if n == 0 then return string.char(tag, 0) end
  local parts
  if tag == 98 then
    parts = {string.char(tag), encode(n), kept}
  else
    local size = encode(n)
    parts = {string.char(tag), encode(1 + #size + n), string.char(10), size, kept}
  end
  for k = 1, #new do parts[#parts + 1] = new[k] end
  return table.concat(parts)
end

local stored = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local t, a, s, stored_us = '', '', '', 0
local ti, ai, si = 1, 1, 1
if stored[1] and stored[2] and stored[3] and stored[4] then
  t, a, s = stored[1], stored[2], stored[3]
  ti, ai, si = entries(t, 114), entries(a, 122), entries(s, 98)
  if ti == nil or ai == nil or si == nil then return 0 end
  local seconds, nanos = stamp(stored[4])
  if seconds == nil then return 0 end
  stored_us = seconds * 1000000 + math.floor(nanos / 1000)
end
local newest = nil
for e = 6, #ARGV, 3 do
  local v = tonumber(ARGV[e])
  if newest == nil or v > newest then newest = v end
end
local cutoff = newest - tonumber(ARGV[5])
-- id record boundaries, decoded only as far as needed; false: not canonical
local boundary, scanned = {}, si
local function scan_to(at)
  while scanned <= at and scanned <= #s do
    if string.byte(s, scanned) ~= 10 then return false end
    local size, j = varint(s, scanned + 1)
    if size == nil or j + size - 1 > #s then return false end
    boundary[scanned] = true
    scanned = j + size
  end
  return true
end
-- the leading entries at or before the cutoff
while ti <= #t do
  local v, j = varint(t, ti)
  if v == nil then return 0 end
  if v > cutoff then break end
  if ai + 8 > #a + 1 or si > #s or not scan_to(si) then return 0 end
  ti, ai, si = j, ai + 8, scanned
end
local new_t, new_a, new_i, added = {}, {}, {}, {}
for e = 6, #ARGV, 3 do
  local id = ARGV[e + 2]
  local record = string.char(10) .. encode(#id) .. id
  local known = added[id] ~= nil
  local from = 1
  while not known do
    local at = string.find(s, record, from, true)
    if at == nil then break end
    if not scan_to(at) then return 0 end
    known = boundary[at] == true
    from = at + 1
  end
  if not known then
    added[id] = true
    local v = tonumber(ARGV[e])
    if v > cutoff then
      new_t[#new_t + 1] = encode(v)
      new_a[#new_a + 1] = ARGV[e + 1]
      new_i[#new_i + 1] = record
    end
  end
end
if newest < stored_us then newest = stored_us end
local seconds = math.floor(newest / 1000000)
local nanos = (newest - seconds * 1000000) * 1000
local ts = ''
if seconds ~= 0 then ts = string.char(8) .. encode(seconds) end
if nanos ~= 0 then ts = ts .. string.char(16) .. encode(nanos) end
redis.call('HSET', KEYS[1],
           ARGV[1], list_value(114, string.sub(t, ti), new_t),
           ARGV[2], list_value(122, string.sub(a, ai), new_a),
           ARGV[3], list_value(98, string.sub(s, si), new_i),
           ARGV[4], ts)
return 1
"""
#: Event times the append script takes exactly (Lua numbers are doubles).
_SCRIPT_TIME_US = range(0, 1 << 53)
_DOUBLE = struct.Struct("<d")

# Load a chunk of customer snapshot rows atomically. For each key: when the stored history is
# newer than the snapshot's cutoff (the server appended after it), skip it and report it so
# the caller merges; otherwise write the snapshot. A stored timestamp it cannot read counts as
# newer (the caller's merge reads it with protobuf). KEYS: customer keys; ARGV: the 3 value
# fields, the timestamp field, then per key: times, amounts, ids, timestamp bytes, cutoff
# seconds, cutoff nanos.
_SNAPSHOT_SCRIPT = _LUA_PROTOBUF + """
local skipped = {}
for k = 1, #KEYS do
  local base = 4 + (k - 1) * 6
  local stored = redis.call('HGET', KEYS[k], ARGV[4])
  local newer = false
  if stored then
    local s, n = stamp(stored)
    local cs, cn = tonumber(ARGV[base + 5]), tonumber(ARGV[base + 6])
    -- a timestamp it cannot read: left to the caller's merge, which reads it with protobuf
    newer = s == nil or s > cs or (s == cs and n > cn)
  end
  if newer then
    skipped[#skipped + 1] = k
  else
    redis.call('HSET', KEYS[k], ARGV[1], ARGV[base + 1], ARGV[2], ARGV[base + 2],
               ARGV[3], ARGV[base + 3], ARGV[4], ARGV[base + 4])
  end
end
return skipped
"""
# Load a chunk of terminal snapshot rows (they replace what is stored). KEYS: terminal keys;
# ARGV: the 2 value fields, the timestamp field, then per key: available, fraud, timestamp.
# One call for hundreds of keys spares the client a pipelined command per key.
_TERMINAL_SCRIPT = """
for k = 1, #KEYS do
  local base = 3 + (k - 1) * 3
  redis.call('HSET', KEYS[k], ARGV[1], ARGV[base + 1], ARGV[2], ARGV[base + 2],
             ARGV[3], ARGV[base + 3])
end
return #KEYS
"""
#: Keys per script call: each call holds Redis for its duration (about 1-3 ms at this size),
#: which concurrent online reads wait out.
_SNAPSHOT_KEYS_PER_CALL = 200


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


def entity_key(join_key: str, value: str, project: str) -> bytes:
    """Feast's Redis key of an entity (serialization v3 + project), via Feast's own code."""
    proto = EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(string_val=value)])
    return serialize_entity_key(proto, entity_key_serialization_version=KEY_SERIALIZATION) + (
        project.encode()
    )


class KeyEncoder:
    """:func:`entity_key` for one string join key, ~30x faster: the join-key prefix is encoded
    once by Feast's code and each value appended in the v3 layout (type, length, bytes)."""

    def __init__(self, join_key: str, project: str):
        self.prefix = serialize_entity_key_prefix([join_key], KEY_SERIALIZATION)
        self.suffix = project.encode()

    def __call__(self, value: str) -> bytes:
        raw = value.encode()
        return b"".join(
            (self.prefix, _STRING_TYPE, len(raw).to_bytes(4, "little"), raw, self.suffix)
        )


def _field(view: str, name: str) -> bytes:
    return bytes(_mmh3(f"{view}:{name}"))


@functools.lru_cache(maxsize=1024)
def _timestamp_bytes(time_us: int) -> bytes:
    """A serialized google.protobuf.Timestamp (cached: snapshot rows share their cutoff)."""
    ts = Timestamp(seconds=time_us // 1_000_000, nanos=(time_us % 1_000_000) * 1000)
    return ts.SerializeToString()


def _timestamp_us(raw: bytes) -> int:
    ts = Timestamp.FromString(raw)
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def encode_customer(history: CustomerHistory) -> tuple[bytes, bytes, bytes]:
    return (
        ValueProto(int64_list_val=Int64List(val=history.time_us.tolist())).SerializeToString(),
        ValueProto(double_list_val=DoubleList(val=history.amount.tolist())).SerializeToString(),
        ValueProto(string_list_val=StringList(val=history.transaction_id)).SerializeToString(),
    )


def _doubles(raw: bytes) -> np.ndarray:
    """A Value's double_list_val. Canonical bytes (tag, length, packed field, length, data:
    what protobuf and :mod:`feature_store.wire` write) are read in place, ~10x faster than
    converting protobuf's repeated field; anything else goes through protobuf."""
    if raw[:1] == b"z":  # field 15 (double_list_val), length-delimited
        outer, i = _varint(raw, 1)
        if i + outer == len(raw) and raw[i : i + 1] == b"\n":
            inner, j = _varint(raw, i + 1)
            if j + inner == len(raw) and inner % 8 == 0:
                return np.frombuffer(raw, "<f8", offset=j)
    return np.array(ValueProto.FromString(raw).double_list_val.val, dtype=np.float64)


def _varint(raw: bytes, start: int) -> tuple[int, int]:
    """The varint at raw[start] and the index after it; (-1, start) when cut off."""
    value = shift = 0
    for i in range(start, min(len(raw), start + 10)):
        byte = raw[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    return -1, start


def decode_customer(times: bytes, amounts: bytes, ids: bytes) -> CustomerHistory:
    return CustomerHistory(
        np.array(ValueProto.FromString(times).int64_list_val.val, dtype=np.int64),
        _doubles(amounts),
        list(ValueProto.FromString(ids).string_list_val.val),
    )


def encode_terminal(history: TerminalHistory) -> tuple[bytes, bytes]:
    return (
        ValueProto(int64_list_val=Int64List(val=history.available_us.tolist())).SerializeToString(),
        ValueProto(int64_list_val=Int64List(val=history.fraud.tolist())).SerializeToString(),
    )


def decode_terminal(available: bytes, fraud: bytes) -> TerminalHistory:
    return TerminalHistory(
        np.array(ValueProto.FromString(available).int64_list_val.val, dtype=np.int64),
        np.array(ValueProto.FromString(fraud).int64_list_val.val, dtype=np.int64),
    )


def merge_customer(
    base: CustomerHistory, events: Iterable[tuple[int, float, str]], horizon_us: int
) -> CustomerHistory:
    """``base`` plus the events whose ids it (or an earlier event) does not hold yet, in order,
    without what is past ``horizon_us`` + slack before the newest event: ``base``'s leading
    entries at or before that cutoff, and new events before it. (Only the leading entries: a
    late entry behind newer ones goes with them. Any entry kept is one a window may still
    need, so features do not depend on the rule; it keeps the in-Redis append from walking
    the whole history.) No events: ``base`` as it is."""
    events = list(events)
    if not events:
        return base
    cutoff = max(t for t, _, _ in events) - horizon_us - HISTORY_SLACK_US
    later = np.flatnonzero(base.time_us > cutoff)
    drop = int(later[0]) if len(later) else len(base.time_us)
    known = set(base.transaction_id)
    times, amounts, ids = [], [], []
    for time_us, amount, tid in events:
        if tid not in known:
            known.add(tid)
            if time_us > cutoff:
                times.append(time_us)
                amounts.append(amount)
                ids.append(tid)
    return CustomerHistory(
        np.concatenate((base.time_us[drop:], np.array(times, np.int64))),
        np.concatenate((base.amount[drop:], np.array(amounts, np.float64))),
        [*base.transaction_id[drop:], *ids],
    )


def _status(found: bool, stored_us: int, at_us: int, ttl_us: int) -> Status:
    if not found:
        return Status.NOT_FOUND
    if at_us - stored_us > ttl_us:
        return Status.OUTSIDE_MAX_AGE
    return Status.PRESENT


def _give_back(pool: redis.ConnectionPool, taken: list[Any]) -> None:
    for connection in taken:
        pool.release(connection)


class DirectConnection:
    """Pipelined commands on one connection of ``client``'s pool per thread, sent and read
    without the pool's per-call bookkeeping: redis-py 7 spends ~30 us per pipeline checking a
    connection out and back in (a poll for stray data included) and in observability hooks,
    about as long as the whole round trip on 127.0.0.1. The connection keeps the pool's
    settings (timeouts, address); any error closes it, so it never holds half a reply, and the
    next call reconnects. Nothing is retried. ``client.close()`` closes it too; the connections
    go back to the pool when this object is garbage-collected."""

    def __init__(self, client: redis.Redis):
        self._pool = client.connection_pool
        self._local = threading.local()
        self._taken: list[Any] = []
        weakref.finalize(self, _give_back, self._pool, self._taken)

    def exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        local = self._local
        connection = getattr(local, "connection", None)
        if connection is None or local.pid != os.getpid():
            connection = local.connection = self._pool.get_connection()
            local.pid = os.getpid()
            self._taken.append(connection)
        try:
            connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            return [connection.read_response() for _ in commands]
        except BaseException:
            connection.disconnect()
            raise


class RedisHistories:
    """Histories in Redis, in Feast's layout (see module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        project: str,
        spec: FeatureSpec = DEFAULT_SPEC,
        *,
        customer_ttl_us: int | None = None,
        terminal_ttl_us: int | None = None,
    ):
        self.client = client
        self.project = project
        self.spec = spec
        self.customer_ttl_us = customer_ttl_us or spec.customer_horizon_us
        self.terminal_ttl_us = terminal_ttl_us or spec.label_delay_us
        self._c_fields = [_field(CUSTOMER_VIEW, f) for f in CUSTOMER_FIELDS]
        self._c_ts = f"_ts:{CUSTOMER_VIEW}".encode()
        self._t_fields = [_field(TERMINAL_VIEW, f) for f in TERMINAL_FIELDS]
        self._t_ts = f"_ts:{TERMINAL_VIEW}".encode()
        self._cas = client.register_script(_CAS_SCRIPT)
        self._append = client.register_script(_APPEND_SCRIPT)
        self._snapshot = client.register_script(_SNAPSHOT_SCRIPT)
        self._terminals = client.register_script(_TERMINAL_SCRIPT)
        self.customer_key = KeyEncoder(d.CUSTOMER_ID, project)
        self.terminal_key = KeyEncoder(d.TERMINAL_ID, project)
        self._direct = DirectConnection(client)

    # reads ----------------------------------------------------------------------------------
    def read(self, requests: Sequence[OnlineRequest]) -> OnlineRead:
        """Histories of every request's customer and terminal, in one round trip."""
        pairs = [
            (self.customer_key(r.customer_id), self.terminal_key(r.terminal_id)) for r in requests
        ]
        c_keys = list(dict.fromkeys(ck for ck, _ in pairs))
        t_keys = list(dict.fromkeys(tk for _, tk in pairs))
        replies = self._direct.exchange(
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
        customers: dict[bytes, tuple[CustomerHistory, int] | None] = {}
        tokens: dict[bytes, bytes] = {}
        for key, (times, amounts, ids, ts) in zip(c_keys, replies[: len(c_keys)], strict=True):
            tokens[key] = ids or b""
            if times is None or amounts is None or ids is None or ts is None:
                customers[key] = None
            else:
                customers[key] = (decode_customer(times, amounts, ids), _timestamp_us(ts))
        terminals: dict[bytes, tuple[TerminalHistory, int] | None] = {}
        for key, (available, fraud, ts) in zip(t_keys, replies[len(c_keys) :], strict=True):
            if available is None or fraud is None or ts is None:
                terminals[key] = None
            else:
                terminals[key] = (decode_terminal(available, fraud), _timestamp_us(ts))
        read = OnlineRead([], [], [], [], tokens=tokens)
        for req, (ck, tk) in zip(requests, pairs, strict=True):
            c_entry, t_entry = customers[ck], terminals[tk]
            if c_entry is not None:
                read.stored[ck] = c_entry
            c_status = _status(
                c_entry is not None, c_entry[1] if c_entry else 0, req.time_us, self.customer_ttl_us
            )
            t_status = _status(
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

        One script call per customer edits the stored values inside Redis; a customer whose
        stored values the script does not handle goes through :meth:`_append_cas`, with ``read``
        (from :meth:`read` of the same requests) saving it a round trip.
        """
        events: dict[bytes, list[tuple[int, float, str]]] = {}
        for r in requests:
            events.setdefault(self.customer_key(r.customer_id), []).append(
                (r.time_us, r.amount, r.transaction_id)
            )
        keep_us = self.spec.customer_horizon_us + HISTORY_SLACK_US
        pipe = self.client.pipeline(transaction=False)
        scripted = [k for k, evs in events.items() if all(t in _SCRIPT_TIME_US for t, _, _ in evs)]
        for key in scripted:
            args: list[bytes | int | str] = [*self._c_fields, self._c_ts, keep_us]
            for time_us, amount, tid in events[key]:
                args += [time_us, _DOUBLE.pack(amount), tid]
            self._append(keys=[key], args=args, client=pipe)
        done = {k for k, ok in zip(scripted, pipe.execute() if scripted else [], strict=True) if ok}
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
            pipe = self.client.pipeline(transaction=False)
            order = list(pending)
            for key in order:
                stored, token = current[key]
                base, stored_us = stored if stored else (CustomerHistory.empty(), 0)
                merged = merge_customer(base, pending[key], self.spec.customer_horizon_us)
                newest = max(t for t, _, _ in pending[key])
                args: list[bytes] = [self._c_fields[2], token]
                for name, value in zip(self._c_fields, encode_customer(merged), strict=True):
                    args += [name, value]
                args += [self._c_ts, _timestamp_bytes(max(stored_us, newest))]
                self._cas(keys=[key], args=args, client=pipe)
            results = pipe.execute()
            failed = [k for k, ok in zip(order, results, strict=True) if not ok]
            if not failed:
                return
            pending = {k: pending[k] for k in failed}
            current = self._read_customers(failed)
        raise redis.WatchError(f"could not append to {len(pending)} customer histories")

    def _read_customers(
        self, keys: list[bytes]
    ) -> dict[bytes, tuple[tuple[CustomerHistory, int] | None, bytes]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, [*self._c_fields, self._c_ts])
        out: dict[bytes, tuple[tuple[CustomerHistory, int] | None, bytes]] = {}
        for key, (times, amounts, ids, ts) in zip(keys, pipe.execute(), strict=True):
            if times is None or amounts is None or ids is None or ts is None:
                out[key] = (None, ids or b"")
            else:
                out[key] = ((decode_customer(times, amounts, ids), _timestamp_us(ts)), ids)
        return out

    # batch materialization ------------------------------------------------------------------
    def write_customer_snapshot(self, snapshot: pa.Table | pd.DataFrame, chunk: int = 1_000) -> int:
        """Load a batch snapshot, keeping events appended online after its cutoff.

        Values are encoded a chunk of rows at a time (:mod:`feature_store.wire`) and written by
        a script, atomically, hundreds of keys per call, while the next chunk is encoded. A
        customer whose stored history is newer than the cutoff (the server appended since) is
        left to :meth:`_merge_snapshot_row`.
        """
        table = _as_table(snapshot)
        ids = table.column(d.CUSTOMER_ID).to_pylist()
        cutoffs = _column_us(table.column(d.EVENT_TIMESTAMP))
        sent: list[tuple[Future[list[Any]], range, pa.Table, list[bytes], list[int]]] = []
        with ThreadPoolExecutor(max_workers=1) as sender:
            for start in range(0, len(ids), chunk):
                part = table.slice(start, chunk)
                times = wire.encode_int64_lists(part.column("TX_TIMESTAMPS_US"))
                amounts = wire.encode_double_lists(part.column("TX_AMOUNTS"))
                tids = wire.encode_string_lists(part.column("TX_IDS"))
                keys = [self.customer_key(str(i)) for i in ids[start : start + chunk]]
                part_cutoffs = cutoffs[start : start + chunk].tolist()
                pipe = self.client.pipeline(transaction=False)
                batches = range(0, len(keys), _SNAPSHOT_KEYS_PER_CALL)
                for lo in batches:
                    hi = min(lo + _SNAPSHOT_KEYS_PER_CALL, len(keys))
                    args: list[bytes | int] = [*self._c_fields, self._c_ts]
                    for i in range(lo, hi):
                        cutoff_us = part_cutoffs[i]
                        args += [
                            times[i],
                            amounts[i],
                            tids[i],
                            _timestamp_bytes(cutoff_us),
                            cutoff_us // 1_000_000,
                            (cutoff_us % 1_000_000) * 1000,
                        ]
                    self._snapshot(keys=keys[lo:hi], args=args, client=pipe)
                sent.append((sender.submit(pipe.execute), batches, part, keys, part_cutoffs))
        for future, batches, part, keys, part_cutoffs in sent:
            for lo, skipped in zip(batches, future.result(), strict=True):
                for k in skipped:
                    row = lo + int(k) - 1
                    self._merge_snapshot_row(keys[row], part, row, part_cutoffs[row])
        return len(ids)

    def _merge_snapshot_row(self, key: bytes, part: pa.Table, row: int, cutoff_us: int) -> None:
        """Snapshot row plus the events stored after its cutoff, compare-and-set."""
        snapshot = CustomerHistory(
            np.asarray(part.column("TX_TIMESTAMPS_US")[row].values, np.int64),
            np.asarray(part.column("TX_AMOUNTS")[row].values, np.float64),
            [str(t) for t in part.column("TX_IDS")[row].values.to_pylist()],
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
                merged = merge_customer(snapshot, events, self.spec.customer_horizon_us)
            args: list[bytes] = [self._c_fields[2], token]
            for name, value in zip(self._c_fields, encode_customer(merged), strict=True):
                args += [name, value]
            args += [self._c_ts, _timestamp_bytes(max(cutoff_us, stored_us))]
            if self._cas(keys=[key], args=args):
                return
        raise redis.WatchError(f"could not merge the snapshot of {key!r}")

    def write_terminal_snapshot(self, snapshot: pa.Table | pd.DataFrame, chunk: int = 2_500) -> int:
        """Load a batch snapshot of terminal labels (replaces the previous one), by a script
        hundreds of keys per call; each chunk is sent while the next one is encoded."""
        table = _as_table(snapshot)
        ids = table.column(d.TERMINAL_ID).to_pylist()
        cutoffs = _column_us(table.column(d.EVENT_TIMESTAMP)).tolist()
        a_field, f_field = self._t_fields
        with ThreadPoolExecutor(max_workers=1) as sender:
            sent = []
            for start in range(0, len(ids), chunk):
                part = table.slice(start, chunk)
                available = wire.encode_int64_lists(part.column("LABEL_AVAILABLE_US"))
                fraud = wire.encode_int64_lists(part.column("LABEL_FRAUD"))
                keys = [self.terminal_key(str(tid)) for tid in ids[start : start + chunk]]
                pipe = self.client.pipeline(transaction=False)
                for lo in range(0, len(keys), _SNAPSHOT_KEYS_PER_CALL):
                    hi = min(lo + _SNAPSHOT_KEYS_PER_CALL, len(keys))
                    args: list[bytes] = [a_field, f_field, self._t_ts]
                    for i in range(lo, hi):
                        args += [available[i], fraud[i], _timestamp_bytes(cutoffs[start + i])]
                    self._terminals(keys=keys[lo:hi], args=args, client=pipe)
                sent.append(sender.submit(pipe.execute))
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


class FeastHistories:
    """The same histories through Feast's public API, for any Feast online store.

    Slower than :class:`RedisHistories` (one Feast call per view, no compare-and-set), meant
    for a single process on a laptop (SQLite) and as the reference the fast path is tested
    against.
    """

    def __init__(self, store: FeatureStore, spec: FeatureSpec = DEFAULT_SPEC):
        self.store = store
        self.spec = spec
        self.customer_ttl_us = spec.customer_horizon_us
        self.terminal_ttl_us = spec.label_delay_us

    def read(self, requests: Sequence[OnlineRequest]) -> OnlineRead:
        response = self.store.get_online_features(
            features=[f"{CUSTOMER_VIEW}:{f}" for f in CUSTOMER_FIELDS]
            + [f"{TERMINAL_VIEW}:{f}" for f in TERMINAL_FIELDS],
            entity_rows=[
                {d.CUSTOMER_ID: r.customer_id, d.TERMINAL_ID: r.terminal_id} for r in requests
            ],
        )
        proto = response.proto
        names = list(proto.metadata.feature_names.val)
        index = {n: i for i, n in enumerate(names)}
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

            times, c_found, c_ts = value("TX_TIMESTAMPS_US")
            c_present = c_found == 1 and times.WhichOneof("val") is not None
            c_status = _status(c_present, c_ts, req.time_us, self.customer_ttl_us)
            if c_status is Status.PRESENT:
                amounts, _, _ = value("TX_AMOUNTS")
                ids, _, _ = value("TX_IDS")
                history = CustomerHistory(
                    np.array(times.int64_list_val.val, np.int64),
                    np.array(amounts.double_list_val.val, np.float64),
                    list(ids.string_list_val.val),
                )
            else:
                history = CustomerHistory.empty()
            available, t_found, t_ts = value("LABEL_AVAILABLE_US")
            t_present = t_found == 1 and available.WhichOneof("val") is not None
            t_status = _status(t_present, t_ts, req.time_us, self.terminal_ttl_us)
            if t_status is Status.PRESENT:
                fraud, _, _ = value("LABEL_FRAUD")
                terminal = TerminalHistory(
                    np.array(available.int64_list_val.val, np.int64),
                    np.array(fraud.int64_list_val.val, np.int64),
                )
            else:
                terminal = TerminalHistory.empty()
            read.customers.append(history)
            read.terminals.append(terminal)
            read.customer_status.append(c_status)
            read.terminal_status.append(t_status)
            if c_status is not Status.NOT_FOUND:
                read.stored[entity_key(d.CUSTOMER_ID, req.customer_id, "")] = (history, c_ts)
        return read

    def append(self, requests: Sequence[OnlineRequest], read: OnlineRead | None = None) -> None:
        read = read or self.read(requests)
        merged: dict[str, tuple[CustomerHistory, int]] = {}
        for req in requests:
            key = entity_key(d.CUSTOMER_ID, req.customer_id, "")
            base, stored_us = merged.get(req.customer_id) or read.stored.get(
                key, (CustomerHistory.empty(), 0)
            )
            history = merge_customer(
                base, [(req.time_us, req.amount, req.transaction_id)], self.spec.customer_horizon_us
            )
            merged[req.customer_id] = (history, max(stored_us, req.time_us))
        frame = pd.DataFrame(
            {
                d.CUSTOMER_ID: list(merged),
                "TX_TIMESTAMPS_US": [h.time_us.tolist() for h, _ in merged.values()],
                "TX_AMOUNTS": [h.amount.tolist() for h, _ in merged.values()],
                "TX_IDS": [h.transaction_id for h, _ in merged.values()],
                d.EVENT_TIMESTAMP: pd.to_datetime(
                    [ts for _, ts in merged.values()], unit="us", utc=True
                ),
            }
        )
        frame[d.CREATED] = pd.Timestamp.now(tz="UTC")
        self.store.push("customer_transactions_push", frame)

    def write_customer_snapshot(self, snapshot: pa.Table | pd.DataFrame) -> int:
        frame = snapshot.to_pandas() if isinstance(snapshot, pa.Table) else snapshot
        self.store.write_to_online_store(CUSTOMER_VIEW, frame)
        return len(frame)

    def write_terminal_snapshot(self, snapshot: pa.Table | pd.DataFrame) -> int:
        frame = snapshot.to_pandas() if isinstance(snapshot, pa.Table) else snapshot
        self.store.write_to_online_store(TERMINAL_VIEW, frame)
        return len(frame)
