"""Online side of the feature store: the histories of ``fraud_v1_online``, read at request time.

One concept per module:

* :mod:`~feature_store.online.history_store` — the :class:`HistoryStore` protocol, its
  :class:`OnlineRead` result and the freshness :class:`Status` of each history;
* :mod:`~feature_store.online.codec` — Feast's Redis layout: entity keys, field names,
  ``ValueProto`` values, ``_ts:<view>`` timestamps;
* :mod:`~feature_store.online.limits` — the bound on one entity's history and on one append
  call (:class:`HistoryLimits`);
* :mod:`~feature_store.online.merge` — the rule of what an append keeps;
* :mod:`~feature_store.online.scripts` and ``lua/`` — the Lua scripts run inside Redis (append,
  compare-and-set, snapshot loads), package files read once;
* :mod:`~feature_store.online.connection` — Redis clients (the one constructor, with its
  serving variant; one server or Redis Cluster) and the direct pipelines of one server and of
  a cluster (routed by hash slot, one round trip per node); deleting one Feast project's keys
  (:func:`delete_project_keys`, the one cleanup of tests and benchmarks);
* :mod:`~feature_store.online.redis_histories` — :class:`RedisHistories`, the fast path in
  Feast's Redis layout (one round trip per request batch, atomic appends);
* :mod:`~feature_store.online.feast_histories` — :class:`FeastHistories`, the same through
  Feast's public API for any online store (SQLite without Redis).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feature_store.online.connection import (
        delete_project_keys,
        is_project_key,
        redis_client,
        redis_reachable,
    )
    from feature_store.online.feast_histories import FeastHistories
    from feature_store.online.history_store import HistoryStore, OnlineRead, Status
    from feature_store.online.limits import HistoryLimits
    from feature_store.online.merge import HISTORY_SLACK_US, append_events, merge_customer
    from feature_store.online.redis_histories import RedisHistories

#: Where each public name lives. Loaded on first use: the codec and the stores import Feast
#: (seconds), which a job that only needs :class:`HistoryLimits` (featurize) does not pay.
_HOMES = {
    "delete_project_keys": "connection",
    "is_project_key": "connection",
    "redis_client": "connection",
    "redis_reachable": "connection",
    "FeastHistories": "feast_histories",
    "HistoryStore": "history_store",
    "OnlineRead": "history_store",
    "Status": "history_store",
    "HistoryLimits": "limits",
    "HISTORY_SLACK_US": "merge",
    "append_events": "merge",
    "merge_customer": "merge",
    "RedisHistories": "redis_histories",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "HISTORY_SLACK_US",
    "FeastHistories",
    "HistoryLimits",
    "HistoryStore",
    "OnlineRead",
    "RedisHistories",
    "Status",
    "append_events",
    "delete_project_keys",
    "is_project_key",
    "merge_customer",
    "redis_client",
    "redis_reachable",
]
