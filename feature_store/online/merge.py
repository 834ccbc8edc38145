"""The merge rule of a customer's history: what an append keeps.

:func:`merge_customer` is the rule for one call of the append script; :func:`append_events`
applies it to a backlog the way :class:`~feature_store.online.RedisHistories` sends it, in
calls of at most ``append_max_events`` events. ``lua/append.lua`` applies the same rule to the
stored bytes inside Redis (one rule: a property test compares the two byte for byte).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from feature_store.online.limits import HistoryLimits, newest
from feature_store.transforms import US_PER_DAY, CustomerHistory

#: Extra history kept beyond the longest window, for requests that arrive a little late.
HISTORY_SLACK_US = US_PER_DAY


def merge_customer(
    base: CustomerHistory,
    events: Iterable[tuple[int, float, str]],
    horizon_us: int,
    max_entries: int,
) -> CustomerHistory:
    """``base`` plus the events whose ids it (or an earlier event) does not hold yet, in order,
    without what is past ``horizon_us`` + slack before the newest event: ``base``'s leading
    entries at or before that cutoff, and new events before it; then, beyond ``max_entries``
    entries, without the oldest (the bound of :mod:`~feature_store.online.limits`). (Only the
    leading entries: a late entry behind newer ones goes with them. Any entry the cutoff keeps
    is one a window may still need; it keeps the in-Redis append from walking the whole
    history.) No events: ``base`` as it is."""
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
    merged = CustomerHistory(
        np.concatenate((base.time_us[drop:], np.array(times, np.int64))),
        np.concatenate((base.amount[drop:], np.array(amounts, np.float64))),
        [*base.transaction_id[drop:], *ids],
    )
    return newest(merged, max_entries)


def append_events(
    base: CustomerHistory,
    events: Sequence[tuple[int, float, str]],
    horizon_us: int,
    limits: HistoryLimits,
) -> CustomerHistory:
    """``base`` after the append calls that carry ``events``: :func:`merge_customer` on each
    run of ``limits.append_max_events`` events, in order."""
    step = limits.append_max_events
    for start in range(0, len(events), step):
        base = merge_customer(base, events[start : start + step], horizon_us, limits.max_entries)
    return base
