"""Open Vigil's Feast store from :class:`vigil.settings.Settings`.

The repo path is ``<home>/feature_repo`` (offline parquet sources, file registry, and the SQLite
online store when Redis is not reachable). The online store is Redis at ``settings.redis.url``;
when nothing answers there, SQLite, so a laptop without Redis still works.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import redis
from feast import FeatureStore, RepoConfig
from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.repo_config import RegistryConfig

from feature_store import definitions
from vigil.errors import FeatureStoreError
from vigil.settings import Settings

log = logging.getLogger(__name__)


def repo_path(settings: Settings) -> Path:
    return (settings.home / "feature_repo").resolve()


def data_dir(settings: Settings) -> Path:
    """Where the offline sources, the registry and the SQLite online store live."""
    return repo_path(settings) / "data"


def redis_connection_string(url: str) -> str:
    """Feast's ``host:port,db=N,password=…`` form of a ``redis://`` URL."""
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


def redis_reachable(url: str, timeout_s: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False
    finally:
        client.close()


def repo_config(settings: Settings, *, online: str | None = None) -> RepoConfig:
    """The Feast configuration for ``settings``; ``online`` forces "redis" or "sqlite"."""
    path = repo_path(settings)
    kind = online
    if kind is None:
        kind = "redis" if redis_reachable(settings.redis.url) else "sqlite"
        if kind == "sqlite":
            log.warning("no Redis at %s: using the SQLite online store", settings.redis.url)
    if kind == "redis":
        online_store: RedisOnlineStoreConfig | SqliteOnlineStoreConfig = RedisOnlineStoreConfig(
            connection_string=redis_connection_string(settings.redis.url)
        )
    elif kind == "sqlite":
        online_store = SqliteOnlineStoreConfig(path=str(data_dir(settings) / "online_store.db"))
    else:
        raise FeatureStoreError(f"online store {kind!r}: expected 'redis' or 'sqlite'")
    return RepoConfig(
        project=settings.features.project,
        provider="local",
        registry=RegistryConfig(path=str(data_dir(settings) / "registry.db"), cache_ttl_seconds=60),
        offline_store=DuckDBOfflineStoreConfig(),
        online_store=online_store,
        entity_key_serialization_version=3,
        repo_path=path,
    )


def open_store(
    settings: Settings, *, online: str | None = None, apply: bool = True
) -> FeatureStore:
    """A FeatureStore with Vigil's definitions applied (idempotent)."""
    config = repo_config(settings, online=online)
    data_dir(settings).mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=config)
    if apply:
        store.apply(list(definitions.build(str(data_dir(settings))).all))
    return store
