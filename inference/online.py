"""The serving side's connection to the online store (Redis in Feast's layout).

:func:`serving_histories` builds the serving variant of the one Redis client
(:func:`feature_store.online.redis_client` with ``serving=True``): every operation, connecting
included, bounded by the serving timeout and never retried, so a slow or absent Redis costs one
timeout, after which :class:`inference.scoring.Scorer` degrades.

Reads are blocking on purpose: the kernel enforces the socket timeout, so a server process
that the OS did not schedule for a while does not see a spurious timeout on a reply that is
already there (an asyncio timer does), and the read costs less CPU than through
``redis.asyncio``. Batching amortizes the round trip over all requests that queued meanwhile.
"""

from __future__ import annotations

import redis

from feature_store.online import HistoryLimits, RedisHistories, redis_client


def serving_histories(
    url: str, timeout_s: float, project: str, limits: HistoryLimits
) -> tuple[redis.Redis, RedisHistories]:
    client = redis_client(url, timeout_s, serving=True)
    return client, RedisHistories(client, project, limits=limits)
