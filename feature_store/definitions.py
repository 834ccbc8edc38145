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
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float64, Int64, PrimitiveFeastType, String

from feature_store.transforms import DEFAULT_SPEC
from vigil import contract as c

CUSTOMER_ID = c.CUSTOMER_ID
TERMINAL_ID = c.TERMINAL_ID
EVENT_TIMESTAMP = "event_timestamp"
CREATED = "created"

TRANSACTION_FEATURES = "transaction_features.parquet"
CUSTOMER_HISTORY = "customer_history.parquet"
TERMINAL_HISTORY = "terminal_history.parquet"

customer = Entity(
    name="customer",
    join_keys=[CUSTOMER_ID],
    value_type=ValueType.STRING,
    description="A card holder (the handbook's CUSTOMER_ID).",
)
terminal = Entity(
    name="terminal",
    join_keys=[TERMINAL_ID],
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


def build(data_dir: str = "data") -> Definitions:
    """All Feast objects, with sources under ``data_dir``.

    ``feast apply`` uses the relative default (Feast resolves it against the repo). Vigil passes
    an absolute folder, because Feast's DuckDB store reads parquet paths relative to the
    working directory instead.
    """
    transaction_features_source = FileSource(
        name="transaction_features",
        path=f"{data_dir}/{TRANSACTION_FEATURES}",
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED,
        description="Batch features as of each transaction (vigil featurize).",
    )
    customer_history_source = FileSource(
        name="customer_history_snapshot",
        path=f"{data_dir}/{CUSTOMER_HISTORY}",
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED,
        description="Each customer's recent transactions at the batch cutoff.",
    )
    terminal_history_source = FileSource(
        name="terminal_history_snapshot",
        path=f"{data_dir}/{TERMINAL_HISTORY}",
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED,
        description="Each terminal's labels and when they become known, at the batch cutoff.",
    )
    customer_transactions_push = PushSource(
        name="customer_transactions_push",
        batch_source=customer_history_source,
        description="Near-real-time updates of customer_history after each scored transaction.",
    )

    customer_spending = FeatureView(
        name="customer_spending",
        entities=[customer],
        ttl=timedelta(days=max(_spec.customer_windows_days)),
        schema=[Field(name=n, dtype=_dtype(n)) for n in _customer_features],
        source=transaction_features_source,
        online=False,
        description="Customer windows (the transaction included) as of each transaction.",
        tags={"contract": "fraud_v1"},
    )
    terminal_risk = FeatureView(
        name="terminal_risk",
        entities=[terminal],
        ttl=timedelta(microseconds=_spec.label_delay_us + _spec.terminal_horizon_us),
        schema=[Field(name=n, dtype=_dtype(n)) for n in _terminal_features],
        source=transaction_features_source,
        online=False,
        description="Terminal counts and fraud ratios, windows ending 7 days before.",
        tags={"contract": "fraud_v1"},
    )

    customer_history = FeatureView(
        name="customer_history",
        entities=[customer],
        # Older than the horizon, a history holds nothing any window can see.
        ttl=timedelta(microseconds=_spec.customer_horizon_us),
        schema=[
            Field(name="TX_TIMESTAMPS_US", dtype=Array(Int64)),
            Field(name="TX_AMOUNTS", dtype=Array(Float64)),
            Field(name="TX_IDS", dtype=Array(String)),
        ],
        source=customer_transactions_push,
        online=True,
        description="The customer's transactions of the last 60 days, epoch microseconds UTC.",
        tags={"contract": "fraud_v1_online"},
    )
    terminal_history = FeatureView(
        name="terminal_history",
        entities=[terminal],
        # Labels become known label_delay days after a transaction: a snapshot older than that
        # misses labels that should already count.
        ttl=timedelta(days=_spec.label_delay_days),
        schema=[
            Field(name="LABEL_AVAILABLE_US", dtype=Array(Int64)),
            Field(name="LABEL_FRAUD", dtype=Array(Int64)),
        ],
        source=terminal_history_source,
        online=True,
        description="The terminal's recent labels and when each becomes known (epoch µs UTC).",
        tags={"contract": "fraud_v1_online"},
    )

    fraud_v1 = FeatureService(
        name="fraud_v1",
        features=[customer_spending, terminal_risk],
        description="Inputs of the fraud model as of each transaction (plus request-time "
        "TX_AMOUNT, TX_DURING_WEEKEND, TX_DURING_NIGHT computed by feature_store.transforms).",
    )
    fraud_v1_online = FeatureService(
        name="fraud_v1_online",
        features=[customer_history, terminal_history],
        description="What serving reads to compute fraud_v1 at request time.",
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
