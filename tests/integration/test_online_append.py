"""The in-Redis append script writes exactly what the Python merge + encode path writes.

:meth:`RedisHistories.append` edits a customer's stored Feast values inside Redis; the
compare-and-set path (read, :func:`append_events`, :func:`encode_customer`) is the reference
and the fallback. Both run here against real Redis on generated histories, events and
limits (a history bound and calls of a few events, so that both bite), and the stored bytes
must be identical. A busy card's backlog goes in bounded calls and leaves a bounded history.
(The scripts on crafted inputs, values they refuse included: ``test_online_scripts.py``.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_store import names as n
from feature_store.online import (
    HISTORY_SLACK_US,
    HistoryLimits,
    RedisHistories,
    delete_project_keys,
)
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
    delete_project_keys(client, project)
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


@st.composite
def limits(draw: st.DrawFn) -> HistoryLimits:
    """Mostly a bound the generated histories reach and calls of fewer events than given."""
    max_entries = draw(st.integers(1, 30))
    return HistoryLimits(max_entries, draw(st.integers(1, min(max_entries, 7))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=histories(),
    ts_offset=offsets,
    events=st.lists(event, min_size=1, max_size=12),
    bounds=limits(),
)
def test_script_append_equals_python_merge(
    store: RedisHistories,
    history: CustomerHistory | None,
    ts_offset: int,
    events: list[tuple[int, float, str]],
    bounds: HistoryLimits,
) -> None:
    bounded = RedisHistories(store.client, store.project, limits=bounds)
    customer = "c-" + uuid.uuid4().hex[:6]
    key = bounded.customer_key(customer)
    _put(bounded, key, history, T0 + ts_offset)
    bounded.append([OnlineRequest(tid, t, customer, "T", a) for t, a, tid in events])
    stored = _stored(bounded, key)
    assert stored == _appended_by_cas(bounded, history, T0 + ts_offset, events)
    assert len(decode_customer(*stored[:3]).transaction_id) <= bounds.max_entries
    bounded.client.delete(key)


class CountingScript:
    """The store's append script, recording how many events each call carries."""

    def __init__(self, script) -> None:
        self.script = script
        self.events: list[int] = []

    def __call__(self, *, keys, args, client=None):
        self.events.append((len(args) - 6) // 3)
        return self.script(keys=keys, args=args, client=client)


def test_a_busy_card_is_appended_in_bounded_calls_and_keeps_a_bounded_history(
    store: RedisHistories,
) -> None:
    """Issue 14: a card with tens of thousands of transactions made one script call walk an
    ever-growing history with the whole backlog (34,006 transactions in one call), past
    Redis's busy limit. Now every call carries at most ``append_max_events`` transactions and
    the history keeps the newest ``max_entries``, stored ones first."""
    bounded = RedisHistories(store.client, store.project,
                             limits=HistoryLimits(max_entries=200, append_max_events=16))
    counting = CountingScript(bounded._append)
    bounded._append = counting
    customer = "hot-" + uuid.uuid4().hex[:6]
    key = bounded.customer_key(customer)
    backlog = [OnlineRequest(f"tx-{k}", T0 + k * 1000, customer, "T", 1.0) for k in range(3000)]
    bounded.append(backlog)
    assert max(counting.events) == 16 and sum(counting.events) == 3000
    stored = decode_customer(*_stored(bounded, key)[:3])
    assert stored.transaction_id == [f"tx-{k}" for k in range(2800, 3000)]
    # The same backlog again (a retry after a timeout): nothing changes.
    bounded.append(backlog[-500:])
    assert decode_customer(*_stored(bounded, key)[:3]).transaction_id == stored.transaction_id
    bounded.client.delete(key)


def test_a_history_stored_beyond_the_bound_is_trimmed_by_compare_and_set(
    store: RedisHistories,
) -> None:
    """A history longer than the bound (stored before there was one, or by an older writer):
    the script refuses it, the compare-and-set path keeps the newest entries; reads never hand
    out more than the bound either."""
    bounded = RedisHistories(store.client, store.project,
                             limits=HistoryLimits(max_entries=50, append_max_events=8))
    customer = "over-" + uuid.uuid4().hex[:6]
    key = bounded.customer_key(customer)
    long = CustomerHistory(T0 + np.arange(400, dtype=np.int64), np.ones(400),
                           [f"old-{k}" for k in range(400)])
    _put(bounded, key, long, T0 + 399)
    read = bounded.read([OnlineRequest("new", T0 + 500, customer, "T", 2.0)])
    assert read.customers[0].transaction_id == [f"old-{k}" for k in range(350, 400)]
    bounded.append([OnlineRequest("new", T0 + 500, customer, "T", 2.0)], read)
    stored = decode_customer(*_stored(bounded, key)[:3])
    assert stored.transaction_id == [*(f"old-{k}" for k in range(351, 400)), "new"]
    bounded.client.delete(key)


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


def test_snapshots_keep_each_entitys_newest_entries(store: RedisHistories) -> None:
    """Materialization writes bounded histories: a card or terminal busy in the batch data is
    as bounded online as one appended to by the server."""
    bounded = RedisHistories(store.client, store.project,
                             limits=HistoryLimits(max_entries=20, append_max_events=4))
    busy, quiet = "snap-busy-" + uuid.uuid4().hex[:6], "snap-quiet-" + uuid.uuid4().hex[:6]
    cutoff = pd.Timestamp(T0 + 1_000, unit="us", tz="UTC")
    customers = pd.DataFrame({
        n.CUSTOMER_ID: [busy, quiet],
        n.TX_TIMESTAMPS_US: [[T0 + k for k in range(300)], [T0]],
        n.TX_AMOUNTS: [[float(k) for k in range(300)], [5.0]],
        n.TX_IDS: [[f"b{k}" for k in range(300)], ["q0"]],
        n.EVENT_TIMESTAMP: [cutoff, cutoff],
    })
    terminals = pd.DataFrame({
        n.TERMINAL_ID: [busy],
        n.LABEL_AVAILABLE_US: [[T0 + k for k in range(300)]],
        n.LABEL_FRAUD: [[k % 2 for k in range(300)]],
        n.EVENT_TIMESTAMP: [cutoff],
    })
    bounded.write_customer_snapshot(customers)
    bounded.write_terminal_snapshot(terminals)
    read = bounded.read([OnlineRequest("x", T0 + 2_000, busy, busy, 1.0),
                         OnlineRequest("y", T0 + 2_000, quiet, busy, 1.0)])
    unbounded = RedisHistories(store.client, store.project,
                               limits=HistoryLimits(max_entries=10_000, append_max_events=4))
    raw = unbounded.read([OnlineRequest("x", T0 + 2_000, busy, busy, 1.0)])
    assert raw.customers[0].transaction_id == [f"b{k}" for k in range(280, 300)]
    assert raw.customers[0].amount.tolist() == [float(k) for k in range(280, 300)]
    assert raw.terminals[0].available_us.tolist() == [T0 + k for k in range(280, 300)]
    assert read.customers[1].transaction_id == ["q0"]
    for key in (bounded.customer_key(busy), bounded.customer_key(quiet),
                bounded.terminal_key(busy)):
        bounded.client.delete(key)
