"""Every Prometheus metric Vigil's model server exports, declared once.

Conventions (docs/DESIGN.md, principle 5): names start with ``vigil_serving_``, carry a unit suffix
(``_seconds``, ``_total``), and only low-cardinality labels: ``model_name`` (a served model or
``unknown``), ``model_version``, ``outcome`` (:data:`OUTCOMES`), ``status_code``, ``protocol``
(``v1``/``v2``), ``entity`` (``customer``/``terminal``), ``status`` (online-store status) and
``reason`` (:data:`DEGRADED_REASONS`, :data:`SHED_REASONS`). Request ids, customer ids or raw
paths never become labels.

A server is one process (scale-out is replicas, each scraped on its own): values live in its
memory and :func:`exposition` renders them. The server imports prometheus_client before Feast,
which would otherwise switch it to file-backed multiprocess values
(:func:`inference.server.prepare_process`).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: What became of a scoring request.
OUTCOMES: Final = (
    "ok",  # scored with online features
    "degraded",  # scored with default features (online store unreachable or slow)
    "invalid",  # 4xx: the request broke the contract
    "unauthorized",  # 401: missing or wrong bearer token
    "not_found",  # 404: unknown model or version
    "not_ready",  # 503: model or online store not reachable yet
    "too_large",  # 413: body over the limit
    "shed",  # 429: the queue, or a customer's share of it, is full (load shedding)
    "error",  # 5xx: a bug
)
#: Why a transaction was scored with default features.
DEGRADED_REASONS: Final = ("timeout", "unreachable", "error", "backoff")
#: Why a request was shed: the queue is full, or its customer's share of it.
SHED_REASONS: Final = ("queue", "customer")
UNKNOWN_MODEL: Final = "unknown"
NO_VERSION: Final = "none"

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
    0.25, 0.5, 1.0, 2.5,
)
_FAST_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
)
_SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter(
    "vigil_serving_requests_total",
    "Scoring requests (V1 predict, V2 infer) by model, version, outcome and HTTP status code.",
    ["model_name", "model_version", "outcome", "status_code"],
)
REQUEST_SECONDS = Histogram(
    "vigil_serving_request_duration_seconds",
    "Server-side time of a scoring request, first byte in to response out.",
    ["model_name", "protocol"],
    buckets=_LATENCY_BUCKETS,
)
FEATURE_FETCH_SECONDS = Histogram(
    "vigil_serving_feature_fetch_duration_seconds",
    "Time of one online-store read (one pipelined round trip per model call).",
    ["model_name"],
    buckets=_FAST_BUCKETS,
)
PREDICT_SECONDS = Histogram(
    "vigil_serving_predict_duration_seconds",
    "Time of one model call: request-time features and the LightGBM prediction of a batch.",
    ["model_name", "model_version"],
    buckets=_FAST_BUCKETS,
)
BATCH_SIZE = Histogram(
    "vigil_serving_batch_size_transactions",
    "Transactions scored per model call (concurrent requests are scored together).",
    ["model_name"],
    buckets=_BATCH_BUCKETS,
)
SCORE = Histogram(
    "vigil_serving_score",
    "Fraud scores (probability) of scored transactions.",
    ["model_name", "model_version"],
    buckets=_SCORE_BUCKETS,
)
TRANSACTIONS = Counter(
    "vigil_serving_transactions_total",
    "Scored transactions by decision (fraud or legit).",
    ["model_name", "model_version", "decision"],
)
DEGRADED = Counter(
    "vigil_serving_degraded_transactions_total",
    "Transactions scored with the documented default features because the online store was "
    "unreachable, slower than its timeout, failing, or in back-off after such a failure.",
    ["model_name", "reason"],
)
MISSING_FEATURES = Counter(
    "vigil_serving_missing_features_total",
    "Transactions whose customer or terminal history was absent (NOT_FOUND) or too old "
    "(OUTSIDE_MAX_AGE) in the online store; their features use the defaults.",
    ["model_name", "entity", "status"],
)
SHED = Counter(
    "vigil_serving_shed_requests_total",
    "Scoring requests refused with 429 and Retry-After before being scored: the queue of "
    "admitted transactions was full (reason queue), or the request's customer's share of it "
    "(reason customer: a card sending faster than it is scored).",
    ["model_name", "reason"],
)
QUEUED = Gauge(
    "vigil_serving_queued_transactions",
    "Transactions admitted and not yet scored.",
    ["model_name"],
)
FEATURE_UPDATE_FAILURES = Counter(
    "vigil_serving_feature_update_failures_total",
    "Failed attempts to append scored transactions to their customer histories (each attempt "
    "counts its transactions; they stay queued and are retried).",
    ["model_name"],
)
FEATURE_UPDATES_DROPPED = Counter(
    "vigil_serving_feature_updates_dropped_total",
    "Scored transactions never appended to their customer histories: the queue of unconfirmed "
    "appends hit its bound while the online store kept failing.",
    ["model_name"],
)
FEATURE_APPEND_NEWEST = Gauge(
    "vigil_serving_feature_append_newest_timestamp_seconds",
    "Event time (TX_DATETIME, Unix time) of the newest transaction this server confirmed in "
    "the online store's customer histories: time() minus it is the age of the newest "
    "near-real-time append.",
    ["model_name"],
)
FEATURE_APPEND_LAST_SUCCESS = Gauge(
    "vigil_serving_feature_append_last_success_timestamp_seconds",
    "When (wall clock) this server last confirmed an append to the online store.",
    ["model_name"],
)
INFERENCE_LOG_ROWS = Counter(
    "vigil_serving_inference_log_rows_total",
    "Scored transactions written to the parquet inference log.",
    ["model_name"],
)
INFERENCE_LOG_WRITE_ERRORS = Counter(
    "vigil_serving_inference_log_write_errors_total",
    "Failed writes of an inference log file (the rows stay buffered and are retried).",
    ["model_name"],
)
INFERENCE_LOG_DROPPED = Counter(
    "vigil_serving_inference_log_dropped_rows_total",
    "Inference log rows dropped because the buffer hit its bound while writes kept failing.",
    ["model_name"],
)
MODEL_INFO = Gauge(
    "vigil_serving_model_info",
    "The served model version and feature service (value 1).",
    ["model_name", "model_version", "feature_service"],
)
MODEL_CREATED = Gauge(
    "vigil_serving_model_created_timestamp_seconds",
    "When the served model version was registered (Unix time): its age is time() minus this.",
    ["model_name", "model_version"],
)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric of this process, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
