"""Vigil's Redis encoding is Feast's: keys, field names and values round-trip."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pytest
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from hypothesis import given
from hypothesis import strategies as st

from feature_store import names as n
from feature_store.online.codec import (
    KeyEncoder,
    decode_customer,
    decode_terminal,
    encode_customer,
    encode_terminal,
    entity_key,
)
from feature_store.online.connection import is_project_key
from feature_store.online.limits import HistoryLimits, newest_labels, newest_rows
from feature_store.online.merge import append_events, merge_customer
from feature_store.transforms import US_PER_DAY, CustomerHistory, TerminalHistory

pytestmark = pytest.mark.unit


@given(value=st.text(max_size=40), project=st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True))
def test_fast_keys_equal_feast_keys(value: str, project: str) -> None:
    for join_key in (n.CUSTOMER_ID, n.TERMINAL_ID):
        assert KeyEncoder(join_key, project)(value) == entity_key(join_key, value, project)


@given(
    values=st.lists(st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1)),
                    min_size=1, max_size=3),
    project=st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True),
    other=st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True),
)
def test_project_keys_are_told_from_other_projects(values: list[str | int], project: str,
                                                   other: str) -> None:
    """Keys Feast's Redis store writes (one or more join keys, string or int64 values) are
    the project's; a key of a project whose name merely ends with it is not."""
    proto = EntityKeyProto(
        join_keys=[f"k{i}" for i in range(len(values))],
        entity_values=[ValueProto(string_val=v) if isinstance(v, str) else ValueProto(int64_val=v)
                       for v in values],
    )
    assert is_project_key(_redis_key(project, proto), project)
    assert not is_project_key(_redis_key(other + project, proto), project)
    assert not is_project_key(_redis_key(project, proto) + b"x", project)
    assert not is_project_key(project.encode(), project)
    assert not is_project_key(b"\x01\x00\x00\x00" + project.encode(), project)


@given(
    times=st.lists(st.integers(-(2**62), 2**62), max_size=50),
    data=st.data(),
)
def test_histories_round_trip(times: list[int], data: st.DataObject) -> None:
    amounts = data.draw(
        st.lists(st.floats(allow_nan=False), min_size=len(times), max_size=len(times))
    )
    ids = data.draw(st.lists(st.text(max_size=8), min_size=len(times), max_size=len(times)))
    history = CustomerHistory(np.array(times, np.int64), np.array(amounts, np.float64), ids)
    back = decode_customer(*encode_customer(history))
    assert back.time_us.tolist() == times
    assert back.amount.tolist() == amounts
    assert back.transaction_id == ids
    fraud = data.draw(st.lists(st.integers(0, 1), min_size=len(times), max_size=len(times)))
    terminal = decode_terminal(
        *encode_terminal(TerminalHistory(np.array(times, np.int64), np.array(fraud, np.int64)))
    )
    assert terminal.available_us.tolist() == times
    assert terminal.fraud.tolist() == fraud


@given(st.lists(st.floats(), max_size=20), st.integers(0, 2))
def test_amounts_in_any_valid_encoding_decode_like_protobuf(values: list[float], form: int) -> None:
    """Canonical amounts are read in place; unpacked entries, a field after the list, or a
    longer length prefix go through protobuf, with the same values."""
    entries = b"".join(b"\x09" + struct.pack("<d", v) for v in values)  # unpacked fixed64
    packed = struct.pack(f"<{len(values)}d", *values)
    inner = [
        b"\x0a" + _varint(len(packed)) + packed,  # canonical
        entries,
        b"\x0a" + _varint(len(packed)) + packed,
    ][form]
    raw = b"z" + _varint(len(inner)) + inner + (b"\x08\x01" if form == 2 else b"")
    expected = list(ValueProto.FromString(raw).double_list_val.val)
    decoded = decode_customer(*encode_customer(CustomerHistory.empty())[:1], raw, b"b\x00")
    assert np.array_equal(decoded.amount, np.array(expected), equal_nan=True)


def _varint(value: int) -> bytes:
    out = b""
    while value >= 0x80:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def test_merge_skips_known_ids_and_trims_to_the_horizon_and_the_bound() -> None:
    base = CustomerHistory(np.array([0, 10], np.int64), np.array([1.0, 2.0]), ["a", "b"])
    merged = merge_customer(base, [(20, 3.0, "c"), (10, 2.0, "b")], horizon_us=US_PER_DAY,
                            max_entries=10)
    assert merged.transaction_id == ["a", "b", "c"]
    far = 40 * US_PER_DAY
    trimmed = merge_customer(merged, [(far, 9.0, "d")], horizon_us=30 * US_PER_DAY,
                             max_entries=10)
    assert trimmed.transaction_id == ["d"]  # all else older than 30 days + 1 day of slack
    bounded = merge_customer(merged, [(30, 1.0, "e"), (31, 1.0, "f")], horizon_us=US_PER_DAY,
                             max_entries=3)
    assert bounded.transaction_id == ["c", "e", "f"]  # the newest three, stored ones go first
    assert bounded.time_us.tolist() == [20, 30, 31] and bounded.amount.tolist() == [3, 1, 1]


def test_appends_go_in_calls_of_a_bounded_number_of_events() -> None:
    """A backlog is appended as calls of ``append_max_events``: an event of a later call whose
    id an earlier call added is known, unless the bound dropped it since; the bound holds
    after every call."""
    events = [(k, 1.0, f"t{k}") for k in range(10)] + [(8, 1.0, "t8"), (3, 1.0, "t3")]
    limits = HistoryLimits(max_entries=4, append_max_events=3)
    appended = append_events(CustomerHistory.empty(), events, US_PER_DAY, limits)
    assert appended.transaction_id == ["t7", "t8", "t9", "t3"]
    assert append_events(appended, [], US_PER_DAY, limits) is appended


def test_snapshot_rows_keep_their_newest_entries() -> None:
    table = pa.table({
        n.CUSTOMER_ID: ["a", "b", "c"],
        n.TX_TIMESTAMPS_US: pa.array([[1, 2, 3, 4, 5], [], [7, 8]], pa.list_(pa.int64())),
        n.TX_IDS: pa.array([["1", "2", "3", "4", "5"], [], ["7", "8"]]),
    })
    bounded = newest_rows(table, [n.TX_TIMESTAMPS_US, n.TX_IDS], 2)
    assert bounded.column(n.TX_TIMESTAMPS_US).to_pylist() == [[4, 5], [], [7, 8]]
    assert bounded.column(n.TX_IDS).to_pylist() == [["4", "5"], [], ["7", "8"]]
    assert bounded.column(n.CUSTOMER_ID).to_pylist() == ["a", "b", "c"]
    assert newest_rows(table, [n.TX_TIMESTAMPS_US, n.TX_IDS], 5) is table
    labels = TerminalHistory(np.arange(6, dtype=np.int64), np.array([0, 1, 0, 0, 1, 1]))
    assert newest_labels(labels, 2).fraud.tolist() == [1, 1]


@given(
    rows=st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=12), max_size=8),
    floats=st.lists(st.lists(st.floats(allow_nan=False), max_size=12), max_size=8),
    strings=st.lists(st.lists(st.text(max_size=150), max_size=6), max_size=8),
    skip=st.integers(0, 2),
)
def test_vectorized_encoding_is_protobufs(rows, floats, strings, skip) -> None:
    """Byte for byte what Value(...).SerializeToString() gives, sliced arrays included."""
    from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, StringList, Value

    from feature_store.wire import encode_double_lists, encode_int64_lists, encode_string_lists

    ints = pa.array(rows, pa.list_(pa.int64())).slice(min(skip, len(rows)))
    assert encode_int64_lists(ints) == [
        Value(int64_list_val=Int64List(val=r)).SerializeToString() for r in rows[skip:]
    ]
    doubles = pa.array(floats, pa.list_(pa.float64())).slice(min(skip, len(floats)))
    assert encode_double_lists(doubles) == [
        Value(double_list_val=DoubleList(val=r)).SerializeToString() for r in floats[skip:]
    ]
    texts = pa.array(strings, pa.list_(pa.string())).slice(min(skip, len(strings)))
    assert encode_string_lists(texts) == [
        Value(string_list_val=StringList(val=r)).SerializeToString() for r in strings[skip:]
    ]


def test_vectorized_encoding_of_timestamps_matches_protobuf() -> None:
    """Microsecond timestamps all take the same varint width: the fast path."""
    from feast.protos.feast.types.Value_pb2 import Int64List, Value

    from feature_store.wire import encode_int64_lists

    rng = np.random.default_rng(0)
    rows = [
        rng.integers(1_500_000_000_000_000, 1_800_000_000_000_000, size).tolist()
        for size in (0, 1, 7, 120)
    ]
    got = encode_int64_lists(pa.array(rows, pa.list_(pa.int64())))
    assert got == [Value(int64_list_val=Int64List(val=r)).SerializeToString() for r in rows]


@pytest.mark.parametrize("width", range(1, 11))
def test_vectorized_varints_of_one_width_match_protobuf(width: int) -> None:
    """Values whose varints all take ``width`` bytes (the fixed-width path up to 8), at both
    edges of the width and in between; 9 and 10 bytes take the general path."""
    from feast.protos.feast.types.Value_pb2 import Int64List, Value

    from feature_store.wire import encode_int64_lists

    low, high = (0 if width == 1 else 1 << 7 * (width - 1)), (1 << 7 * width) - 1
    if width == 10:  # negative int64s: two's complement, 10 bytes
        low, high = -(2**63), -1
    high = min(high, 2**63 - 1)
    rng = np.random.default_rng(width)
    middle = rng.integers(low, high, 50, endpoint=True).tolist()
    rows = [[low, high], middle, [high] * 3, []]
    got = encode_int64_lists(pa.array(rows, pa.list_(pa.int64())))
    assert got == [Value(int64_list_val=Int64List(val=r)).SerializeToString() for r in rows]
