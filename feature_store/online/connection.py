"""Connections to the Redis online store: every client Vigil builds comes from
:func:`redis_client`; :class:`DirectConnection` is the serving read path's pipeline.

Two kinds of client:

* batch and tools (materialization, the reachability probe): the socket timeout asked for,
  at least 0.5 s to connect, otherwise redis-py's defaults for a URL;
* serving (``serving=True``): every operation, connecting included, bounded by the timeout,
  never retried and no health-check round trips, stated explicitly rather than left to
  redis-py's defaults (which differ between ``Redis(...)``, whose default policy retries three
  times with up-to-seconds back-off, and ``Redis.from_url``): a slow or absent Redis costs one
  timeout, after which the scorer degrades.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Shortest connect timeout of batch clients (a cold TCP handshake to a remote Redis).
_MIN_CONNECT_TIMEOUT_S = 0.5


def redis_client(url: str, timeout_s: float, *, serving: bool = False) -> redis.Redis:
    """A client of the Redis at ``url`` with socket timeout ``timeout_s`` (see the module
    docstring for the serving variant)."""
    if serving:
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=max(timeout_s, _MIN_CONNECT_TIMEOUT_S),
    )


def redis_reachable(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis answers a PING at ``url``."""
    client = redis_client(url, timeout_s)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    finally:
        client.close()


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
