"""The batch feature engines and the options of a Spark session (no heavy import: the command
line and the pipeline parameters read their defaults from here).

``duckdb`` runs the feature SQL in process; ``spark`` runs the same SQL on a PySpark session
(:mod:`feature_store.spark`).
"""

from __future__ import annotations

import dataclasses
from typing import Final

from vigil.errors import FeatureStoreError

#: The batch executors ``vigil featurize --engine`` accepts; the first is the default.
ENGINES: Final = ("duckdb", "spark")
DEFAULT_ENGINE: Final = ENGINES[0]
DEFAULT_MASTER: Final = "local[2]"
DEFAULT_PARTITIONS: Final = 2
DEFAULT_DRIVER_MEMORY: Final = "1g"


@dataclasses.dataclass(frozen=True)
class SparkOptions:
    """How to start the featurization session."""

    #: ``local[N]`` (in this process's JVM), or a cluster's master URL (``spark://…``,
    #: ``k8s://…``, ``yarn``).
    master: str = DEFAULT_MASTER
    #: Partitions of each window shuffle (``spark.sql.shuffle.partitions``).
    partitions: int = DEFAULT_PARTITIONS
    #: The driver JVM's heap; in local mode the executors share it. The handbook-size data
    #: (1.8M rows) needs more than the 1g default (bench/spark.py uses 4g).
    driver_memory: str = DEFAULT_DRIVER_MEMORY
    app_name: str = "vigil-featurize"

    def __post_init__(self) -> None:
        if not self.master.strip():
            raise FeatureStoreError("spark master: empty (e.g. local[2] or spark://host:7077)")
        if self.partitions < 1:
            raise FeatureStoreError(f"spark partitions: {self.partitions}, expected >= 1")

    @property
    def local(self) -> bool:
        return self.master.startswith("local")

    def conf(self) -> dict[str, str]:
        """The session's settings: no UI, few shuffle partitions, UTC, quiet logs. A local
        driver binds 127.0.0.1; on a cluster the executors must reach the driver, so its
        address is left to the cluster's own configuration (spark-defaults.conf)."""
        conf = {
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": str(self.partitions),
            "spark.default.parallelism": str(self.partitions),
            "spark.driver.memory": self.driver_memory,
            # a heap too small ends the JVM (an error here) instead of hanging the collect
            "spark.driver.extraJavaOptions": "-XX:+ExitOnOutOfMemoryError",
            # naive timestamps are UTC (batch_sql's unix_micros reads them in this zone)
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.log.level": "ERROR",
        }
        if self.local:
            conf["spark.driver.host"] = "127.0.0.1"
            conf["spark.driver.bindAddress"] = "127.0.0.1"
        return conf
