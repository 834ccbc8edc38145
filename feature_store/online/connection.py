"""Connections to the Redis online store: every client Vigil builds comes from
:func:`redis_client`; :class:`DirectConnection` is the serving read path's pipeline on one
server, :class:`ClusterConnection` the same on Redis Cluster (commands routed by hash slot, one
round trip per node).

Addresses: ``redis://[:password@]host:port/db`` (``rediss://``: TLS) for one server;
``redis+cluster://[:password@]host:port,host:port`` (``rediss+cluster://``) for Redis Cluster,
discovered from any of the nodes listed (settings: ``redis.type``, ``redis.cluster_nodes``).

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

import collections
import hashlib
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

#: Shortest connect timeout of batch clients (a cold TCP handshake to a remote Redis).
_MIN_CONNECT_TIMEOUT_S = 0.5


#: Schemes of a Redis Cluster address.
CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")


class NotReplicatedError(redis.RedisError):
    """Fewer replicas than asked confirmed a write within the wait (Redis ``WAIT``): the write
    may be lost if its primary fails now, so it does not count as done."""


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def cluster_address(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, bool]:
    """Nodes (host, port), username, password and TLS of a ``redis+cluster://`` address."""
    scheme, _, rest = url.partition("://")
    if scheme not in CLUSTER_SCHEMES or not rest:
        raise ValueError(f"redis cluster address {url!r}: expected "
                         "redis+cluster://[:password@]host:port,host:port")
    auth, _, hosts = rest.rpartition("@")
    username = password = None
    if auth:
        user, _, secret = auth.partition(":")
        username, password = unquote(user) or None, unquote(secret)
    nodes = []
    for node in hosts.rstrip("/").split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"redis cluster address {url!r}: node {node!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, username, password, scheme == "rediss+cluster"


def redis_client(
    url: str, timeout_s: float, *, serving: bool = False
) -> redis.Redis | RedisCluster:
    """A client of the Redis at ``url`` with socket timeout ``timeout_s`` (see the module
    docstring for the serving variant): a :class:`redis.cluster.RedisCluster` for a cluster
    address, which reads the cluster's slot map from the first node that answers (a
    ``redis.ConnectionError`` when none does)."""
    options: dict[str, Any] = {"socket_timeout": timeout_s}
    if serving:
        options |= {"socket_connect_timeout": timeout_s, "retry": Retry(NoBackoff(), 0),
                    "health_check_interval": 0}
    else:
        options["socket_connect_timeout"] = max(timeout_s, _MIN_CONNECT_TIMEOUT_S)
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    nodes, username, password, tls = cluster_address(url)
    try:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            username=username, password=password, ssl=tls, **options,
        )
    except RedisClusterException as e:
        raise redis.ConnectionError(f"redis cluster {nodes}: {e}") from e


def redis_reachable(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis answers a PING at ``url`` (on a cluster: every primary)."""
    try:
        client = redis_client(url, timeout_s)
    except redis.ConnectionError:
        return False
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, RedisClusterException):
        return False
    finally:
        client.close()


#: Keys deleted per DEL command by :func:`delete_project_keys`.
_DELETE_CHUNK: Final = 500
_GLOB_SPECIAL: Final = re.compile(r"([\\*?\[\]])")


def is_project_key(key: bytes, project: str) -> bool:
    """Whether ``key`` is an entity key of Feast project ``project`` in Feast's Redis layout
    (:mod:`feature_store.online.codec`): a serialization-v3 entity key — key count, then each
    join key and each value as (type, length, bytes) — followed by exactly the project name.
    A key of project ``x_vigil`` is not one of project ``vigil``, though both end with it."""
    suffix = project.encode()
    if not key.endswith(suffix):
        return False
    end = len(key) - len(suffix)
    if end < 4:
        return False
    (count,) = struct.unpack_from("<I", key, 0)
    pos = 4
    for _ in range(2 * count):  # the join keys, then the values
        if pos + 8 > end:
            return False
        (length,) = struct.unpack_from("<I", key, pos + 4)
        pos += 8 + length
    return count > 0 and pos == end


def delete_project_keys(client: redis.Redis | RedisCluster, project: str) -> int:
    """Delete every key of Feast project ``project`` from the online store behind ``client``
    (one server, or every primary of a cluster); returns how many were deleted. Feast's Redis
    online store keeps one hash per entity, keyed by the serialized entity key followed by
    the project name; keys that only end with the name (another project's) are left alone."""
    pattern = b"*" + _GLOB_SPECIAL.sub(r"\\\1", project).encode()
    keys = [k for k in client.scan_iter(match=pattern, count=1000) if is_project_key(k, project)]
    deleted = 0
    for start in range(0, len(keys), _DELETE_CHUNK):
        deleted += int(client.delete(*keys[start : start + _DELETE_CHUNK]))
    return deleted


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


#: Rounds of redirections (MOVED, ASK, NOSCRIPT, TRYAGAIN) one exchange follows.
_CLUSTER_ROUNDS = 4
#: Pause before a round that follows a TRYAGAIN (a slot being migrated).
_TRYAGAIN_PAUSE_S = 0.01


_KIND: Final = {MovedError: "MOVED", AskError: "ASK", NoScriptError: "NOSCRIPT"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reply(connection: Any) -> Any:
    """The next reply; an error reply as its exception, returned (it is read in full)."""
    try:
        return connection.read_response()
    except ResponseError as e:
        return e


class ClusterConnection:
    """:class:`DirectConnection` on Redis Cluster: ``client`` (a ``RedisCluster``) holds the
    slot map; each command goes to the primary of its key's hash slot (a script call's keys
    must share one slot). The commands of one node are pipelined on one connection of that
    node (per thread); every node's commands are written before any reply is read, so the
    nodes work concurrently and an exchange costs one round trip, whatever the number of nodes.

    Redirections are followed, up to ``_CLUSTER_ROUNDS`` rounds: ``MOVED`` (the slot map is
    read again, then the command resent), ``ASK`` (resent to the node named, after
    ``ASKING``), ``NOSCRIPT`` (``SCRIPT LOAD`` once on that node, then the ``EVALSHA`` resent)
    and ``TRYAGAIN``. Any other error reply is raised once every reply is read;
    a connection error closes this exchange's connections (none holds half a reply), marks the
    slot map stale (read again before the next exchange: a failover moves slots) and is raised.

    ``wait=(replicas, timeout_ms)`` ends each node's commands with ``WAIT``: fewer replicas
    confirming raises :class:`NotReplicatedError` (after the redirections are followed)."""

    def __init__(self, client: RedisCluster):
        self.client = client
        self._scripts: dict[str, bytes] = {}
        self._local = threading.local()
        self._stale = False
        #: Redirections followed, by kind (MOVED, ASK, NOSCRIPT, TRYAGAIN), and slot map reads.
        self.redirected: collections.Counter[str] = collections.Counter()

    def script(self, text: str) -> str:
        """Register a script; its SHA1 for ``EVALSHA`` commands."""
        body = text.encode()
        sha = hashlib.sha1(body).hexdigest()
        self._scripts[sha] = body
        return sha

    def _connection(self, node: ClusterNode) -> Any:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.pid, local.connections = os.getpid(), {}
        entry = local.connections.get(node.name)
        client = node.redis_connection
        if client is None:
            raise redis.ConnectionError(f"redis cluster node {node.name}: not connected")
        if entry is None or entry[0] is not client:
            pool = client.connection_pool
            entry = local.connections[node.name] = (client, pool.get_connection())
        return entry[1]

    def _node(self, command: tuple[Any, ...]) -> ClusterNode:
        name = command[0].upper() if isinstance(command[0], bytes) else command[0].encode().upper()
        key = command[3] if name in (b"EVALSHA", b"EVAL") else command[1]
        if isinstance(key, str):
            key = key.encode()
        try:
            return self.client.nodes_manager.get_node_from_slot(key_slot(key))  # type: ignore[arg-type]
        except RedisClusterException as e:  # a slot no node serves
            self._stale = True
            raise ClusterDownError(str(e)) from e

    def _refresh(self) -> None:
        try:
            self.client.nodes_manager.initialize()
        except RedisClusterException as e:
            raise redis.ConnectionError(f"redis cluster: cannot read the slot map: {e}") from e
        self._stale = False
        self.redirected["refresh"] += 1

    def exchange(
        self, commands: Sequence[tuple[Any, ...]], *, wait: tuple[int, int] | None = None
    ) -> list[Any]:
        replies: list[Any] = [None] * len(commands)
        sending = list(commands)
        todo = list(range(len(commands)))
        asking: dict[int, ClusterNode] = {}
        missing: set[str] = set()  # scripts some node did not have: loaded before resending
        for _ in range(_CLUSTER_ROUNDS):
            if self._stale:
                self._refresh()
            groups: dict[str, tuple[ClusterNode, list[int]]] = {}
            for i in todo:
                node = asking.get(i) or self._node(sending[i])
                groups.setdefault(node.name, (node, []))[1].append(i)
            if not groups and wait is None:
                return replies
            retry, unconfirmed, failure = self._round(sending, groups, asking, replies, wait,
                                                      missing)
            if failure is not None:
                raise failure
            if not retry:
                if unconfirmed:
                    raise NotReplicatedError(
                        f"WAIT: fewer than {wait[0] if wait else 0} replicas confirmed the "
                        f"writes on {', '.join(unconfirmed)}"
                    )
                return replies
            asked, todo, asking = asking, [], {}
            pause = False
            for i in retry:
                error = replies[i]
                todo.append(i)
                self.redirected[_KIND.get(type(error), "TRYAGAIN")] += 1
                if isinstance(error, MovedError):
                    self._stale = True
                elif isinstance(error, AskError):
                    target = self.client.get_node(error.host, error.port)
                    if target is None:
                        self._stale = True
                    else:
                        asking[i] = target
                elif isinstance(error, NoScriptError):
                    sha = sending[i][1]
                    missing.add(sha.decode() if isinstance(sha, bytes) else sha)
                    if i in asked:  # the script was missing on the node asked
                        asking[i] = asked[i]
                else:
                    pause = True
            if pause:
                time.sleep(_TRYAGAIN_PAUSE_S)
            # the nodes confirmed what they wrote this round; only retried commands wait again
        raise redis.exceptions.ClusterError(
            f"redis cluster: {len(todo)} commands still redirected after {_CLUSTER_ROUNDS} rounds"
        )

    def _round(
        self,
        sending: list[tuple[Any, ...]],
        groups: dict[str, tuple[ClusterNode, list[int]]],
        asking: dict[int, ClusterNode],
        replies: list[Any],
        wait: tuple[int, int] | None,
        missing: set[str],
    ) -> tuple[list[int], list[str], BaseException | None]:
        """Send every group (after ``SCRIPT LOAD`` of the ``missing`` scripts it calls), then
        read every reply: (commands to resend, nodes whose WAIT fell short, the first other
        error)."""
        used: list[Any] = []
        loads: list[int] = []
        try:
            for node, indices in groups.values():
                connection = self._connection(node)
                used.append(connection)
                packed: list[tuple[Any, ...]] = []
                if missing:
                    called = {_text(sending[i][1]) for i in indices
                              if _text(sending[i][0]).upper() == "EVALSHA"}
                    packed += [(b"SCRIPT", b"LOAD", self._scripts[sha])
                               for sha in sorted(called & missing)]
                loads.append(len(packed))
                for i in indices:
                    if i in asking:
                        packed.append((b"ASKING",))
                    packed.append(sending[i])
                if wait is not None:
                    packed.append((b"WAIT", *wait))
                connection.send_packed_command(connection.pack_commands(packed),
                                               check_health=False)
            retry: list[int] = []
            unconfirmed: list[str] = []
            failure: BaseException | None = None
            for connection, load, (node, indices) in zip(used, loads, groups.values(),
                                                         strict=True):
                for _ in range(load):
                    loaded = _reply(connection)
                    if isinstance(loaded, ResponseError) and failure is None:
                        failure = loaded
                for i in indices:
                    if i in asking:
                        _reply(connection)
                    reply = replies[i] = _reply(connection)
                    if isinstance(reply, (AskError, NoScriptError, TryAgainError)):
                        retry.append(i)
                    elif isinstance(reply, ResponseError) and failure is None:
                        failure = reply
                if wait is not None:
                    acknowledged = _reply(connection)
                    if not isinstance(acknowledged, int) or acknowledged < wait[0]:
                        unconfirmed.append(node.name)
            return retry, unconfirmed, failure
        except BaseException:
            for connection in used:
                connection.disconnect()
            self._stale = True
            raise
