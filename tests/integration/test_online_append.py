"""The in-Redis append script writes exactly what the Python merge + encode path writes.

:meth:`RedisHistories.append` edits a customer's stored Feast values inside Redis; the
compare-and-set path (read, :func:`merge_customer`, :func:`encode_customer`) is the reference
and the fallback. Both run here against real Redis on generated histories and events, and the
stored bytes must be identical. (The scripts on crafted inputs, values they refuse included:
``test_online_scripts.py``.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_store.online import HISTORY_SLACK_US, RedisHistories
from feature_store.online.codec import decode_customer, encode_customer, timestamp_bytes
from feature_store.transforms import DEFAULT_SPEC, US_PER_DAY, CustomerHistory, OnlineRequest

pytestmark = pytest.mark.integration

T0 = 1_530_000_000_000_000  # 2018-06-26, epoch microseconds
#: The last ids hold another id's stored record ("\n", length, bytes) inside them: a match of
#: the bytes that is not at a record boundary is not a known id.
IDS = [str(i) for i in range(30)] + ["", "é", "tx-42", "a\n\x017", "\n\x0122", "\n\x00"]


@pytest.fixture(scope="module")
def store() -> Iterator[RedisHistories]:
    client = redis.Redis(host="127.0.0.1", port=6379)
    project = f"test_append_{uuid.uuid4().hex[:8]}"
    yield RedisHistories(client, project)
    for key in client.scan_iter(match=b"*" + project.encode(), count=1000):
        client.delete(key)
    client.close()


def _stored(store: RedisHistories, key: bytes) -> list[bytes | None]:
    return store.client.hmget(key, [*store._c_fields, store._c_ts])


def _put(store: RedisHistories, key: bytes, history: CustomerHistory | None, ts_us: int) -> None:
    store.client.delete(key)
    if history is not None:
        mapping = dict(zip(store._c_fields, encode_customer(history), strict=True))
        store.client.hset(key, mapping={**mapping, store._c_ts: timestamp_bytes(ts_us)})


def _appended_by_cas(
    store: RedisHistories,
    history: CustomerHistory | None,
    ts_us: int,
    events: list[tuple[int, float, str]],
) -> list[bytes | None]:
    """What the compare-and-set path (the reference) stores for the same history and events."""
    twin = store.customer_key("cas-" + uuid.uuid4().hex[:8])
    _put(store, twin, history, ts_us)
    store._append_cas({twin: events}, None)
    try:
        return _stored(store, twin)
    finally:
        store.client.delete(twin)


#: What an append keeps: entries after its newest event minus this.
KEEP_US = DEFAULT_SPEC.customer_horizon_us + HISTORY_SLACK_US
# Times spread over 90 days, or on the trimming edge of an append whose newest event is at
# offset 0 or 1 (exactly at, 1 µs inside, 1 µs outside): without those, a rule that differs
# only at the edge would go unnoticed.
offsets = st.integers(-45 * US_PER_DAY, 45 * US_PER_DAY) | st.sampled_from(
    [0, 1, -KEEP_US - 1, -KEEP_US, -KEEP_US + 1, -KEEP_US + 2]
)
amounts = st.floats(allow_nan=False, width=64) | st.sampled_from([0.0, -0.0, 1e-300, 220.01])
event = st.tuples(offsets.map(lambda o: T0 + o), amounts, st.sampled_from(IDS))


@st.composite
def histories(draw: st.DrawFn) -> CustomerHistory | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None  # no stored history yet
    rows = draw(st.lists(event, max_size=25, unique_by=lambda e: e[2]))
    return CustomerHistory(
        np.array([t for t, _, _ in rows], np.int64),
        np.array([a for _, a, _ in rows], np.float64),
        [i for _, _, i in rows],
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=histories(),
    ts_offset=offsets,
    events=st.lists(event, min_size=1, max_size=6),
)
def test_script_append_equals_python_merge(
    store: RedisHistories,
    history: CustomerHistory | None,
    ts_offset: int,
    events: list[tuple[int, float, str]],
) -> None:
    customer = "c-" + uuid.uuid4().hex[:6]
    key = store.customer_key(customer)
    _put(store, key, history, T0 + ts_offset)
    store.append([OnlineRequest(tid, t, customer, "T", a) for t, a, tid in events])
    assert _stored(store, key) == _appended_by_cas(store, history, T0 + ts_offset, events)
    store.client.delete(key)


def test_values_the_script_cannot_edit_go_through_compare_and_set(store: RedisHistories) -> None:
    """A stored time before 1970 (a 10-byte varint, not exact in a Lua number), or an event
    time the script is not given: the Python path appends, with the same result. (Times near
    the epoch, so that both transactions stay within the horizon.)"""
    for history, events in (
        (
            CustomerHistory(np.array([-5], np.int64), np.array([1.0]), ["a"]),
            [(10, 2.0, "b")],
        ),
        (
            CustomerHistory(np.array([0], np.int64), np.array([1.0]), ["a"]),
            [(-7, 2.0, "b")],
        ),
    ):
        customer = "odd-" + uuid.uuid4().hex[:6]
        key = store.customer_key(customer)
        _put(store, key, history, 0)
        store.append([OnlineRequest(tid, t, customer, "T", a) for t, a, tid in events])
        stored = _stored(store, key)
        appended = decode_customer(*stored[:3])
        assert appended.transaction_id == ["a", "b"]
        assert appended.time_us.tolist() == [int(history.time_us[0]), events[0][0]]
        assert stored == _appended_by_cas(store, history, 0, events)


def test_trims_to_the_horizon_plus_slack(store: RedisHistories) -> None:
    horizon = store.spec.customer_horizon_us
    history = CustomerHistory(
        np.array([T0, T0 + 1], np.int64), np.array([1.0, 2.0]), ["old", "kept"]
    )
    key = store.customer_key("trim")
    _put(store, key, history, T0 + 1)
    newest = T0 + horizon + HISTORY_SLACK_US  # "old" is exactly at the edge: trimmed
    store.append([OnlineRequest("new", newest, "trim", "T", 3.0)])
    times, _, ids, ts = _stored(store, key)
    expected = CustomerHistory(
        np.array([T0 + 1, newest], np.int64), np.array([2.0, 3.0]), ["kept", "new"]
    )
    assert [times, ids] == [encode_customer(expected)[0], encode_customer(expected)[2]]
    assert ts == timestamp_bytes(newest)
