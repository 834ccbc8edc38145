"""What the feature store needs to know, and nothing else: :class:`StoreConfig`.

The feature store never reads Vigil's application settings: its callers build a
:class:`StoreConfig` once with :meth:`StoreConfig.from_settings` and pass it down.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from feature_store.online.limits import HistoryLimits
from vigil.settings import Settings

#: The Feast repo's folder under Vigil's home.
REPO_FOLDER = "feature_repo"


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    #: The Feast repo: offline parquet sources, the file registry and the SQLite online store
    #: (when Redis is not reachable) live in its ``data`` folder.
    repo_path: Path
    #: Feast project (namespaces the keys of the online store).
    project: str
    #: redis://[:password@]host:port/db of the online store, or redis+cluster://[:password@]
    #: host:port,host:port of a Redis Cluster (``RedisSettings.online_url``). (Timeouts belong
    #: to each use: the serving read budget is the server's, a materialization's is its job's.)
    redis_url: str
    #: Bounds of one entity's online history and of one append call.
    limits: HistoryLimits = dataclasses.field(default_factory=HistoryLimits)

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreConfig:
        return cls(
            repo_path=(settings.home / REPO_FOLDER).resolve(),
            project=settings.features.project,
            redis_url=settings.redis.online_url,
            limits=HistoryLimits.from_settings(settings.redis),
        )

    @property
    def data_dir(self) -> Path:
        """Where the offline sources, the registry and the SQLite online store live."""
        return self.repo_path / "data"
