"""Freshness of the online store, as Prometheus series that keep meaning something between
pushes: timestamps, from which PromQL computes ages (``time() - ...``).

* ``vigil_feature_materialized_until_timestamp_seconds{project, feature_view}``: the event time
  the last materialized snapshot of a feature view is as of, pushed by ``vigil materialize``.
  ``time()`` minus it is the quantity Feast's own feature server exports as
  ``feast_feature_freshness_seconds`` (now minus the view's most recent materialization end).
* ``vigil_feature_materialization_last_success_timestamp_seconds{project}``: when it ran.
* The model servers export the newest near-real-time append themselves
  (``vigil_serving_feature_append_newest_timestamp_seconds``, :mod:`monitoring.metrics`).
"""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Mapping
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import push_to_gateway

from vigil.errors import VigilError

PUSH_JOB: Final = "vigil_materialize"


def materialization_registry(project: str, until: Mapping[str, datetime],
                             finished_at: float | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    g = Gauge("vigil_feature_materialized_until_timestamp_seconds",
              "Event time (Unix time) the feature view's last materialized snapshot is as of: "
              "time() minus it is Feast's feature freshness.", ["project", "feature_view"],
              registry=registry)
    for view, ts in until.items():
        g.labels(project, view).set(ts.timestamp())
    Gauge("vigil_feature_materialization_last_success_timestamp_seconds",
          "When the last materialization into the online store finished.", ["project"],
          registry=registry).labels(project).set(finished_at or time.time())
    return registry


def push_materialization(url: str, project: str, until: Mapping[str, datetime],
                         timeout_s: float = 10.0) -> None:
    try:
        push_to_gateway(url, job=PUSH_JOB, registry=materialization_registry(project, until),
                        grouping_key={"project": project}, timeout=timeout_s)
    except (urllib.error.URLError, OSError) as e:
        raise VigilError(f"cannot push materialization metrics to {url}: {e}") from e
