"""The Lua scripts of the online store, run directly against real Redis (EVAL / EVALSHA) with
crafted arguments: their replies and the bytes they store.

The sources are the package's ``feature_store/online/lua/*.lua`` files as
:mod:`feature_store.online.scripts` loads them. That ``append.lua`` applies the same rule as
:func:`~feature_store.online.merge.merge_customer` on generated histories is the property test
in ``test_online_append.py``.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from importlib import resources

import numpy as np
import pytest
import redis

from feature_store import names as n
from feature_store.online import delete_project_keys, scripts
from feature_store.online.codec import (
    KeyEncoder,
    encode_customer,
    encode_terminal,
    field_name,
    timestamp_bytes,
    timestamp_field,
)
from feature_store.online.merge import HISTORY_SLACK_US
from feature_store.online.redis_histories import RedisHistories
from feature_store.transforms import DEFAULT_SPEC, CustomerHistory, TerminalHistory

pytestmark = pytest.mark.integration

T0 = 1_530_000_000_000_000  # 2018-06-26, epoch microseconds
C_FIELDS = [field_name(n.CUSTOMER_HISTORY, f) for f in n.CUSTOMER_HISTORY_FIELDS]
C_TS = timestamp_field(n.CUSTOMER_HISTORY)
T_FIELDS = [field_name(n.TERMINAL_HISTORY, f) for f in n.TERMINAL_HISTORY_FIELDS]
T_TS = timestamp_field(n.TERMINAL_HISTORY)
KEEP_US = DEFAULT_SPEC.customer_horizon_us + HISTORY_SLACK_US


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


@pytest.fixture
def keys(client: redis.Redis) -> Iterator[KeyEncoder]:
    """Keys of a project of this test's own, deleted afterwards."""
    project = f"test_lua_{uuid.uuid4().hex[:8]}"
    yield KeyEncoder(n.CUSTOMER_ID, project)
    delete_project_keys(client, project)


def _history(*events: tuple[int, float, str]) -> CustomerHistory:
    return CustomerHistory(
        np.array([t for t, _, _ in events], np.int64),
        np.array([a for _, a, _ in events], np.float64),
        [i for _, _, i in events],
    )


def _put(client: redis.Redis, key: bytes, history: CustomerHistory, ts_us: int) -> None:
    mapping = dict(zip(C_FIELDS, encode_customer(history), strict=True))
    client.hset(key, mapping={**mapping, C_TS: timestamp_bytes(ts_us)})


def _stored(client: redis.Redis, key: bytes) -> list[bytes | None]:
    return client.hmget(key, [*C_FIELDS, C_TS])


def _append_args(
    *events: tuple[int, float, str], max_entries: int = 1_000
) -> list[bytes | int | str]:
    args: list[bytes | int | str] = [*C_FIELDS, C_TS, KEEP_US, max_entries]
    for time_us, amount, tid in events:
        args += [time_us, struct.pack("<d", amount), tid]
    return args


def test_scripts_are_the_package_files() -> None:
    lua = resources.files("feature_store.online").joinpath("lua")
    protobuf = lua.joinpath("protobuf.lua").read_text(encoding="utf-8")
    assert scripts.APPEND == protobuf + lua.joinpath("append.lua").read_text(encoding="utf-8")
    assert scripts.SNAPSHOT == protobuf + lua.joinpath("snapshot.lua").read_text(encoding="utf-8")
    assert scripts.CAS == lua.joinpath("cas.lua").read_text(encoding="utf-8")
    assert scripts.TERMINALS == lua.joinpath("terminals.lua").read_text(encoding="utf-8")


# protobuf.lua ----------------------------------------------------------------------------------


PROTOBUF = resources.files("feature_store.online").joinpath("lua", "protobuf.lua").read_text(
    encoding="utf-8"
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\x00", [0, 2]),
        (b"\x7f", [127, 2]),
        (b"\xac\x02", [300, 3]),
        (b"\xff" * 7 + b"\x0f", [(1 << 53) - 1, 9]),  # the largest exact integer
        (b"\x80" * 7 + b"\x10", None),  # 2^53: not exact in a Lua number
        (b"\x80" * 8 + b"\x01", None),  # 2^56
        (b"\xac", None),  # runs off the end
    ],
)
def test_protobuf_varint(client: redis.Redis, raw: bytes, expected: list[int] | None) -> None:
    run = PROTOBUF + "local v, i = varint(ARGV[1], 1)\nif v == nil then return false end\n"
    assert client.eval(run + "return {v, i}", 0, raw) == expected


def test_protobuf_timestamp(client: redis.Redis) -> None:
    run = PROTOBUF + "local s, n = stamp(ARGV[1])\nif s == nil then return false end\nreturn {s, n}"
    us = T0 + 123_456
    assert client.eval(run, 0, timestamp_bytes(us)) == [us // 1_000_000, 123_456_000]
    assert client.eval(run, 0, b"") == [0, 0]  # the epoch: both fields default
    assert client.eval(run, 0, b"\x18\x01") is None  # field 3: not a Timestamp
    assert client.eval(run, 0, b"\x08") is None  # cut off


# cas.lua ---------------------------------------------------------------------------------------


def test_cas_writes_only_over_the_token_it_was_given(client: redis.Redis, keys) -> None:
    key = keys("cas")
    ids_field = C_FIELDS[2]
    cas = client.register_script(scripts.CAS)
    # nothing stored: the empty token matches
    assert cas(keys=[key], args=[ids_field, b"", ids_field, b"one", C_TS, b"t1"]) == 1
    assert client.hmget(key, [ids_field, C_TS]) == [b"one", b"t1"]
    # a stale token: nothing written
    assert cas(keys=[key], args=[ids_field, b"", ids_field, b"two", C_TS, b"t2"]) == 0
    assert client.hmget(key, [ids_field, C_TS]) == [b"one", b"t1"]
    # the current token
    assert cas(keys=[key], args=[ids_field, b"one", ids_field, b"two", C_TS, b"t2"]) == 1
    assert client.hmget(key, [ids_field, C_TS]) == [b"two", b"t2"]


# append.lua ------------------------------------------------------------------------------------


def test_append_to_nothing_writes_the_canonical_values(client: redis.Redis, keys) -> None:
    key = keys("new")
    events = [(T0, 12.5, "a"), (T0 + 5, 7.25, "b"), (T0 + 5, 1.0, "a")]  # "a" twice: once
    assert client.eval(scripts.APPEND, 1, key, *_append_args(*events)) == 1
    expected = _history((T0, 12.5, "a"), (T0 + 5, 7.25, "b"))
    assert _stored(client, key) == [*encode_customer(expected), timestamp_bytes(T0 + 5)]


def test_append_skips_known_ids_trims_and_keeps_the_newer_timestamp(
    client: redis.Redis, keys
) -> None:
    key = keys("old")
    old = T0 - KEEP_US  # exactly at the cutoff of the newest event below: dropped
    _put(client, key, _history((old, 1.0, "x"), (T0 - 10, 2.0, "y")), T0 + 99)
    events = [(T0, 3.0, "y"), (T0 - KEEP_US - 1, 4.0, "z"), (T0, 5.0, "w")]
    assert client.eval(scripts.APPEND, 1, key, *_append_args(*events)) == 1
    expected = _history((T0 - 10, 2.0, "y"), (T0, 5.0, "w"))  # y known, z too old, x trimmed
    # the stored timestamp (T0 + 99) is newer than every event: it stays
    assert _stored(client, key) == [*encode_customer(expected), timestamp_bytes(T0 + 99)]


def test_append_finds_ids_only_at_record_boundaries(client: redis.Redis, keys) -> None:
    """An id whose bytes sit inside another stored id (its record: 0x0A, length, bytes) is new."""
    key = keys("inside")
    _put(client, key, _history((T0, 1.0, "a\n\x017")), T0)
    assert client.eval(scripts.APPEND, 1, key, *_append_args((T0 + 1, 2.0, "7"))) == 1
    expected = _history((T0, 1.0, "a\n\x017"), (T0 + 1, 2.0, "7"))
    assert _stored(client, key)[2] == encode_customer(expected)[2]


def test_append_keeps_the_newest_entries_up_to_the_bound(client: redis.Redis, keys) -> None:
    """Issue 14: a history had no size bound. The oldest entries beyond the bound go, stored
    ones first, then the oldest of the call's own events."""
    key = keys("bound")
    stored = [(T0 + k, float(k), f"s{k}") for k in range(5)]
    _put(client, key, _history(*stored), T0 + 4)
    events = [(T0 + 10 + k, 1.0, f"e{k}") for k in range(3)]
    assert client.eval(scripts.APPEND, 1, key, *_append_args(*events, max_entries=6)) == 1
    assert _stored(client, key)[:3] == list(encode_customer(_history(*stored[2:], *events)))
    more = [(T0 + 20 + k, 2.0, f"f{k}") for k in range(4)]  # more events than the bound
    assert client.eval(scripts.APPEND, 1, key, *_append_args(*more, max_entries=3)) == 0
    _put(client, key, _history(*events), T0 + 12)
    assert client.eval(scripts.APPEND, 1, key, *_append_args(*more, max_entries=3)) == 1
    assert _stored(client, key) == [*encode_customer(_history(*more[1:])),
                                    timestamp_bytes(T0 + 23)]


def test_append_refuses_a_stored_history_beyond_the_bound(client: redis.Redis, keys) -> None:
    """Trimming a history stored beyond the bound (written before there was one) would walk it
    inside Redis: the script leaves it to the compare-and-set path."""
    key = keys("over")
    _put(client, key, _history(*[(T0 + k, 1.0, f"s{k}") for k in range(8)]), T0 + 7)
    before = _stored(client, key)
    event = (T0 + 9, 1.0, "n")
    assert client.eval(scripts.APPEND, 1, key, *_append_args(event, max_entries=7)) == 0
    assert _stored(client, key) == before
    assert client.eval(scripts.APPEND, 1, key, *_append_args(event, max_entries=8)) == 1


@pytest.mark.parametrize(
    "damage",
    ["negative time", "field after the list", "unreadable timestamp", "amounts cut short"],
)
def test_append_returns_0_and_writes_nothing_for_values_it_does_not_handle(
    client: redis.Redis, keys, damage: str
) -> None:
    key = keys(damage)
    history = _history((T0, 1.0, "a"), (T0 + 1, 2.0, "b"))
    _put(client, key, history, T0 + 1)
    times, amounts, ids = encode_customer(history)
    ts = timestamp_bytes(T0 + 1)
    if damage == "negative time":  # a 10-byte varint: not exact in a Lua number
        times = encode_customer(_history((-5, 1.0, "a"), (T0 + 1, 2.0, "b")))[0]
    elif damage == "field after the list":  # protobuf allows it, the script does not
        times += b"\x10\x01"
    elif damage == "unreadable timestamp":
        ts = b"\x18\x01"
    else:  # an entry the script must drop is not there
        amounts = encode_customer(_history((T0 + 1, 2.0, "b")))[1]
    client.hset(key, mapping={C_FIELDS[0]: times, C_FIELDS[1]: amounts, C_TS: ts})
    before = _stored(client, key)
    newest = T0 + KEEP_US + 1 if damage == "amounts cut short" else T0 + 2
    assert client.eval(scripts.APPEND, 1, key, *_append_args((newest, 3.0, "c"))) == 0
    assert _stored(client, key) == before == [times, amounts, ids, ts]


# snapshot.lua ----------------------------------------------------------------------------------


def _snapshot_args(rows: list[tuple[CustomerHistory, int]]) -> list[bytes | int]:
    args: list[bytes | int] = [*C_FIELDS, C_TS]
    for history, cutoff_us in rows:
        args += [*encode_customer(history), timestamp_bytes(cutoff_us),
                 cutoff_us // 1_000_000, (cutoff_us % 1_000_000) * 1000]
    return args


def test_snapshot_skips_keys_stored_after_its_cutoff(client: redis.Redis, keys) -> None:
    absent, older, same, newer, unreadable = (keys(k) for k in ("a", "o", "s", "n", "u"))
    cutoff = T0 + 1_500_000  # half a second into a second: nanos compared too
    kept = _history((T0 - 7, 9.0, "kept"))
    for key, ts in ((older, cutoff - 1), (same, cutoff), (newer, cutoff + 1)):
        _put(client, key, kept, ts)
    _put(client, unreadable, kept, cutoff)
    client.hset(unreadable, C_TS, b"\x18\x01")
    snapshot = _history((T0, 1.0, "s1"), (T0 + 1, 2.0, "s2"))
    order = [absent, older, same, newer, unreadable]
    args = _snapshot_args([(snapshot, cutoff)] * len(order))
    skipped = client.evalsha(client.script_load(scripts.SNAPSHOT), len(order), *order, *args)
    assert skipped == [4, 5]  # 1-based positions of `newer` and `unreadable`
    written = [*encode_customer(snapshot), timestamp_bytes(cutoff)]
    for key in (absent, older, same):
        assert _stored(client, key) == written
    assert _stored(client, newer) == [*encode_customer(kept), timestamp_bytes(cutoff + 1)]
    assert _stored(client, unreadable) == [*encode_customer(kept), b"\x18\x01"]


# terminals.lua ---------------------------------------------------------------------------------


def test_terminal_snapshot_writes_its_fields(client: redis.Redis, keys) -> None:
    first, second = keys("t1"), keys("t2")
    client.hset(second, mapping={T_FIELDS[0]: b"old", T_TS: b"old", b"other": b"kept"})
    rows = [
        (TerminalHistory(np.array([T0, T0 + 1], np.int64), np.array([0, 1], np.int64)), T0 + 9),
        (TerminalHistory.empty(), T0 + 10),
    ]
    args: list[bytes] = [*T_FIELDS, T_TS]
    for history, ts in rows:
        args += [*encode_terminal(history), timestamp_bytes(ts)]
    assert client.eval(scripts.TERMINALS, 2, first, second, *args) == 2
    for key, (history, ts) in zip((first, second), rows, strict=True):
        assert client.hmget(key, [*T_FIELDS, T_TS]) == [*encode_terminal(history),
                                                          timestamp_bytes(ts)]
    assert client.hget(second, b"other") == b"kept"


def test_redis_histories_registers_these_scripts(client: redis.Redis) -> None:
    store = RedisHistories(client, "unused")
    assert [store._cas.script, store._append.script, store._snapshot.script,
            store._terminals.script] == [scripts.CAS, scripts.APPEND, scripts.SNAPSHOT,
                                         scripts.TERMINALS]
