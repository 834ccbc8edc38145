"""Feast objects of the fraud features. ``feast apply`` in this folder registers them.

Two feature services form the contract between training and serving:

* ``fraud_v1`` — the model's inputs as of each transaction (``customer_spending``,
  ``terminal_risk``), joined point-in-time for training sets. Their windows end at the
  transaction's own instant, so no value stored before a request can be its feature.
* ``fraud_v1_online`` — what serving reads to compute ``fraud_v1`` at request time with the same
  transform (``feature_store.transforms``): the customer's recent transactions (updated in near
  real time through ``customer_transactions_push``) and the terminal's labels with the time each
  becomes known (from the last batch).

Source paths are relative to the repo path of the store using them (Feast resolves them).
No side effects at import: Feast imports every module here on ``feast apply``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float64, Int64, PrimitiveFeastType, String

from feature_store import names as n
from feature_store.transforms import DEFAULT_SPEC

customer = Entity(
    name=n.CUSTOMER_ENTITY,
    join_keys=[n.CUSTOMER_ID],
    value_type=ValueType.STRING,
    description="A card holder (the handbook's CUSTOMER_ID).",
)
terminal = Entity(
    name=n.TERMINAL_ENTITY,
    join_keys=[n.TERMINAL_ID],
    value_type=ValueType.STRING,
    description="A payment terminal (the handbook's TERMINAL_ID).",
)

_spec = DEFAULT_SPEC
_customer_features = [name for name in _spec.features if name.startswith("CUSTOMER_ID_")]
_terminal_features = [name for name in _spec.features if name.startswith("TERMINAL_ID_")]


def _dtype(name: str) -> PrimitiveFeastType:
    return Int64 if "_NB_TX_" in name else Float64


@dataclasses.dataclass(frozen=True)
class Definitions:
    entities: list[Entity]
    sources: list[PushSource]
    feature_views: list[FeatureView]
    feature_services: list[FeatureService]

    @property
    def all(self) -> list[Entity | PushSource | FeatureView | FeatureService]:
        return [*self.entities, *self.sources, *self.feature_views, *self.feature_services]


def build(data_dir: str = "data", *, batch_source: Callable[..., Any] = FileSource) -> Definitions:
    """All Feast objects, with sources under ``data_dir``; ``batch_source`` makes the parquet
    sources (``FileSource``; :func:`feature_store.spark.spark_definitions` passes Spark's).

    ``feast apply`` uses the relative default (Feast resolves it against the repo). Vigil passes
    an absolute folder, because Feast's DuckDB store reads parquet paths relative to the
    working directory instead.
    """
    transaction_features_source = batch_source(
        name=n.TRANSACTION_FEATURES_SOURCE,
        path=f"{data_dir}/{n.TRANSACTION_FEATURES_FILE}",
        timestamp_field=n.EVENT_TIMESTAMP,
        created_timestamp_column=n.CREATED,
        description="Batch features as of each transaction (vigil featurize).",
    )
    customer_history_source = batch_source(
        name=n.CUSTOMER_HISTORY_SOURCE,
        path=f"{data_dir}/{n.CUSTOMER_HISTORY_FILE}",
        timestamp_field=n.EVENT_TIMESTAMP,
        created_timestamp_column=n.CREATED,
        description="Each customer's recent transactions at the batch cutoff.",
    )
    terminal_history_source = batch_source(
        name=n.TERMINAL_HISTORY_SOURCE,
        path=f"{data_dir}/{n.TERMINAL_HISTORY_FILE}",
        timestamp_field=n.EVENT_TIMESTAMP,
        created_timestamp_column=n.CREATED,
        description="Each terminal's labels and when they become known, at the batch cutoff.",
    )
    customer_transactions_push = PushSource(
        name=n.CUSTOMER_PUSH_SOURCE,
        batch_source=customer_history_source,
        description=f"Near-real-time updates of {n.CUSTOMER_HISTORY} after each scored "
        "transaction.",
    )

    customer_spending = FeatureView(
        name=n.CUSTOMER_SPENDING,
        entities=[customer],
        ttl=timedelta(days=max(_spec.customer_windows_days)),
        schema=[Field(name=n, dtype=_dtype(n)) for n in _customer_features],
        source=transaction_features_source,
        online=False,
        description="Customer windows (the transaction included) as of each transaction.",
        tags={n.CONTRACT_TAG: n.FEATURE_SERVICE},
    )
    terminal_risk = FeatureView(
        name=n.TERMINAL_RISK,
        entities=[terminal],
        ttl=timedelta(microseconds=_spec.label_delay_us + _spec.terminal_horizon_us),
        schema=[Field(name=n, dtype=_dtype(n)) for n in _terminal_features],
        source=transaction_features_source,
        online=False,
        description="Terminal counts and fraud ratios, windows ending 7 days before.",
        tags={n.CONTRACT_TAG: n.FEATURE_SERVICE},
    )

    customer_history = FeatureView(
        name=n.CUSTOMER_HISTORY,
        entities=[customer],
        # Older than the horizon, a history holds nothing any window can see.
        ttl=timedelta(microseconds=_spec.customer_horizon_us),
        schema=[
            Field(name=n.TX_TIMESTAMPS_US, dtype=Array(Int64)),
            Field(name=n.TX_AMOUNTS, dtype=Array(Float64)),
            Field(name=n.TX_IDS, dtype=Array(String)),
        ],
        source=customer_transactions_push,
        online=True,
        description="The customer's transactions of the last 60 days, epoch microseconds UTC.",
        tags={n.CONTRACT_TAG: n.ONLINE_FEATURE_SERVICE},
    )
    terminal_history = FeatureView(
        name=n.TERMINAL_HISTORY,
        entities=[terminal],
        # Labels become known label_delay days after a transaction: a snapshot older than that
        # misses labels that should already count.
        ttl=timedelta(days=_spec.label_delay_days),
        schema=[
            Field(name=n.LABEL_AVAILABLE_US, dtype=Array(Int64)),
            Field(name=n.LABEL_FRAUD, dtype=Array(Int64)),
        ],
        source=terminal_history_source,
        online=True,
        description="The terminal's recent labels and when each becomes known (epoch µs UTC).",
        tags={n.CONTRACT_TAG: n.ONLINE_FEATURE_SERVICE},
    )

    fraud_v1 = FeatureService(
        name=n.FEATURE_SERVICE,
        features=[customer_spending, terminal_risk],
        description="Inputs of the fraud model as of each transaction (plus request-time "
        "TX_AMOUNT, TX_DURING_WEEKEND, TX_DURING_NIGHT computed by feature_store.transforms).",
    )
    fraud_v1_online = FeatureService(
        name=n.ONLINE_FEATURE_SERVICE,
        features=[customer_history, terminal_history],
        description=f"What serving reads to compute {n.FEATURE_SERVICE} at request time.",
    )
    return Definitions(
        entities=[customer, terminal],
        sources=[customer_transactions_push],
        feature_views=[customer_spending, terminal_risk, customer_history, terminal_history],
        feature_services=[fraud_v1, fraud_v1_online],
    )


# Module-level objects for `feast apply` in this folder.
_default = build()
customer, terminal = _default.entities
(customer_transactions_push,) = _default.sources
customer_spending, terminal_risk, customer_history, terminal_history = _default.feature_views
fraud_v1, fraud_v1_online = _default.feature_services
