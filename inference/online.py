"""The serving side's connection to the online store (Redis in Feast's layout).

:func:`serving_redis_client` builds a client whose every operation, connecting included, is
bounded by the serving timeout and never retried: a slow or absent Redis costs one timeout,
after which :class:`inference.scoring.Scorer` degrades. (redis-py's default policy retries three
times with up-to-seconds back-off, far beyond a 20 ms budget.)

Reads are blocking on purpose: the kernel enforces the socket timeout, so a server process
that the OS did not schedule for a while does not see a spurious timeout on a reply that is
already there (an asyncio timer does), and the read costs less CPU than through
``redis.asyncio``. Batching amortizes the round trip over all requests that queued meanwhile.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_store.online import RedisHistories


def serving_redis_client(url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def serving_histories(
    url: str, timeout_s: float, project: str
) -> tuple[redis.Redis, RedisHistories]:
    client = serving_redis_client(url, timeout_s)
    return client, RedisHistories(client, project)
