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
from redis.cluster import RedisCluster

from feature_store.online import HistoryLimits, RedisHistories, redis_client


def serving_histories(
    url: str, timeout_s: float, project: str, limits: HistoryLimits, *, append_replicas: int = 0
) -> tuple[redis.Redis | RedisCluster, RedisHistories]:
    """A serving client of ``url`` and its histories; ``append_replicas`` > 0: every append
    waits (Redis WAIT, half the socket timeout) for that many replicas to confirm it."""
    client = redis_client(url, timeout_s, serving=True)
    wait_ms = max(1, int(timeout_s * 1000 / 2))
    return client, RedisHistories(client, project, limits=limits,
                                  append_replicas=append_replicas, append_wait_ms=wait_ms)
