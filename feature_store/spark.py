"""The batch feature definition on Spark: the same SQL as DuckDB, run by a PySpark session.

* :func:`spark_session`: a session for featurization (local mode by default, a cluster's
  ``master`` otherwise; :class:`feature_store.engines.SparkOptions`), small and quiet, always
  stopped at the end.
* :class:`SparkEngine`: :class:`feature_store.transforms.SqlEngine` on a session. The window
  statistics of :func:`feature_store.transforms.batch_stats` (``batch_sql`` rendered in the
  Spark dialect, and ``ties_sql``) run on Spark; the same-instant id order is the one rule of
  :mod:`vigil.ordering` (ranks computed before the SQL, as for DuckDB), and the features come
  from the same :func:`~feature_store.transforms.finalize`.
* :func:`spark_features`: :func:`~feature_store.transforms.batch_features` on Spark.
* :func:`spark_repo_config` / :func:`spark_definitions`: Feast's Spark offline store
  (``feast.infra.offline_stores.contrib.spark_offline_store``) over the same parquet sources.

PySpark is an optional dependency (``pip install vigil[spark]``, plus a Java 17 runtime): it
is imported only when a session starts, so the DuckDB path never needs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from feature_store.engines import SparkOptions
from feature_store.transforms import DEFAULT_SPEC, SPARK, FeatureSpec, batch_features
from vigil.errors import FeatureStoreError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from feast import RepoConfig
    from pyspark.sql import SparkSession

    from feature_store.config import StoreConfig
    from feature_store.definitions import Definitions

def _require_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
        return
    if shutil.which("java") is None:
        raise FeatureStoreError(
            "the spark engine needs a Java 17+ runtime: no `java` on PATH and no JAVA_HOME "
            "(Debian: apt-get install openjdk-17-jre-headless)"
        )


@contextlib.contextmanager
def spark_session(options: SparkOptions | None = None) -> Iterator[SparkSession]:
    """A Spark session for featurization, stopped (JVM and all) when the block ends.

    When this process already has an active session (a caller's, e.g. a notebook's or a test
    module's), that one is used as it is and left running: a process has one SparkContext."""
    options = options or SparkOptions()
    _require_java()
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:
        raise FeatureStoreError(
            "the spark engine needs pyspark: pip install 'vigil[spark]'"
        ) from e
    active = SparkSession.getActiveSession()
    if active is not None:
        master = active.sparkContext.master
        if master != options.master:
            log.warning("using this process's Spark session (master %s), not %s",
                        master, options.master)
        yield active
        return
    if options.local:  # every Spark service of a local session on loopback, not only the driver
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder: Any = SparkSession.builder.master(options.master).appName(options.app_name)
    for key, value in options.conf().items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    try:
        session.sparkContext.setLogLevel("ERROR")
        yield session
    finally:
        session.stop()


class SparkEngine:
    """:class:`feature_store.transforms.SqlEngine` on a Spark session: Arrow tables become
    temporary views, the query's result comes back as Arrow."""

    dialect = SPARK

    def __init__(self, session: SparkSession) -> None:
        self.session = session

    def query(self, sql: str, tables: Mapping[str, pa.Table]) -> pa.Table:
        for name, table in tables.items():
            self.session.createDataFrame(table).createOrReplaceTempView(name)
        try:
            result: pa.Table = self.session.sql(sql).toArrow()
            return result
        finally:
            for name in tables:
                self.session.catalog.dropTempView(name)


def spark_features(
    transactions: pd.DataFrame,
    spec: FeatureSpec = DEFAULT_SPEC,
    *,
    session: SparkSession | None = None,
    options: SparkOptions | None = None,
) -> pd.DataFrame:
    """:func:`feature_store.transforms.batch_features` with its SQL on Spark: on ``session``,
    or on a session of its own started with ``options`` and stopped at the end."""
    if session is not None:
        return batch_features(transactions, spec, engine=SparkEngine(session))
    with spark_session(options) as own:
        return batch_features(transactions, spec, engine=SparkEngine(own))


# --------------------------------------------------------------------------------------------
# Feast's Spark offline store over the same sources
# --------------------------------------------------------------------------------------------


def spark_definitions(data_dir: str) -> Definitions:
    """Vigil's Feast objects with Spark sources (parquet) instead of file sources: Feast's
    Spark offline store accepts only ``SparkSource`` (or Iceberg) batch sources."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
        SparkSource,
    )

    from feature_store.definitions import build

    def source(**kwargs: Any) -> SparkSource:
        return SparkSource(file_format="parquet", **kwargs)

    return build(data_dir, batch_source=source)


def spark_repo_config(
    config: StoreConfig, options: SparkOptions | None = None, registry: str = "registry_spark.db"
) -> RepoConfig:
    """Feast configuration with the Spark offline store (``spark_conf`` from ``options``)
    and SQLite online store; its own registry file, since its sources are Spark sources."""
    from feast import RepoConfig
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
        SparkOfflineStoreConfig,
    )
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RegistryConfig

    from feature_store.online.codec import KEY_SERIALIZATION

    options = options or SparkOptions()
    conf = {"spark.master": options.master, "spark.app.name": options.app_name}
    return RepoConfig(
        project=config.project,
        provider="local",
        registry=RegistryConfig(path=str(config.data_dir / registry), cache_ttl_seconds=60),
        offline_store=SparkOfflineStoreConfig(spark_conf=conf | options.conf()),
        online_store=SqliteOnlineStoreConfig(path=str(config.data_dir / "online_store.db")),
        entity_key_serialization_version=KEY_SERIALIZATION,
        repo_path=config.repo_path,
    )
