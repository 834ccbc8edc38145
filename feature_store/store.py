"""Open Vigil's Feast store from a :class:`feature_store.config.StoreConfig`.

The repo path is ``<home>/feature_repo`` (offline parquet sources, file registry, and the SQLite
online store when Redis is not reachable). The online store is Redis at ``config.redis_url``
(Feast's ``redis_type: redis_cluster`` for a Redis Cluster address); when nothing answers
there, SQLite, so a laptop without Redis still works.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlparse

from feast import FeatureStore, RepoConfig
from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.repo_config import RegistryConfig

from feature_store import definitions
from feature_store.config import StoreConfig
from feature_store.online.codec import KEY_SERIALIZATION
from feature_store.online.connection import cluster_address, is_cluster_url, redis_reachable
from vigil.errors import FeatureStoreError

log = logging.getLogger(__name__)


def redis_connection_string(url: str) -> str:
    """Feast's ``host:port,db=N,password=…`` form of a ``redis://`` URL; for a Redis Cluster
    address (``redis+cluster://``) the ``host:port,host:port,password=…`` form that Feast's
    ``redis_type: redis_cluster`` reads (every item without ``=`` is a startup node)."""
    if is_cluster_url(url):
        try:
            nodes, username, password, tls = cluster_address(url)
        except ValueError as e:
            raise FeatureStoreError(str(e)) from e
        parts = [f"{host}:{port}" for host, port in nodes]
        if username:
            parts.append(f"username={username}")
        if password:
            parts.append(f"password={password}")
        if tls:
            parts.append("ssl=true")
        return ",".join(parts)
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise FeatureStoreError(f"redis url {url!r}: expected redis://host:port/db")
    parts = [f"{parsed.hostname}:{parsed.port or 6379}"]
    db = (parsed.path or "/0").lstrip("/") or "0"
    if not db.isdigit():
        raise FeatureStoreError(f"redis url {url!r}: database must be a number, got {db!r}")
    parts.append(f"db={db}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    extra = parse_qs(parsed.query)
    if extra:
        raise FeatureStoreError(f"redis url {url!r}: query parameters are not supported")
    return ",".join(parts)


def repo_config(config: StoreConfig, *, online: str | None = None) -> RepoConfig:
    """The Feast configuration of ``config``; ``online`` forces "redis" or "sqlite"."""
    kind = online
    if kind is None:
        kind = "redis" if redis_reachable(config.redis_url) else "sqlite"
        if kind == "sqlite":
            log.warning("no Redis at %s: using the SQLite online store", config.redis_url)
    if kind == "redis":
        online_store: RedisOnlineStoreConfig | SqliteOnlineStoreConfig = RedisOnlineStoreConfig(
            redis_type=RedisType.redis_cluster if is_cluster_url(config.redis_url)
            else RedisType.redis,
            connection_string=redis_connection_string(config.redis_url),
        )
    elif kind == "sqlite":
        online_store = SqliteOnlineStoreConfig(path=str(config.data_dir / "online_store.db"))
    else:
        raise FeatureStoreError(f"online store {kind!r}: expected 'redis' or 'sqlite'")
    return RepoConfig(
        project=config.project,
        provider="local",
        registry=RegistryConfig(path=str(config.data_dir / "registry.db"), cache_ttl_seconds=60),
        offline_store=DuckDBOfflineStoreConfig(),
        online_store=online_store,
        entity_key_serialization_version=KEY_SERIALIZATION,
        repo_path=config.repo_path,
    )


def open_store(
    config: StoreConfig, *, online: str | None = None, apply: bool = True
) -> FeatureStore:
    """A FeatureStore with Vigil's definitions applied (idempotent)."""
    repo = repo_config(config, online=online)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=repo)
    if apply:
        store.apply(list(definitions.build(str(config.data_dir)).all))
    return store
