"""The Feast names of the fraud features, defined once (no Feast import).

:mod:`feature_store.definitions` builds the Feast objects under these names; the online and
offline stores, the jobs, the pipeline steps, serving, the benchmarks and the tests refer to
them here instead of spelling the strings again.
"""

from __future__ import annotations

from typing import Final

from vigil import contract as c

# feature services: the contract between training and serving -------------------------------
#: The model's inputs as of each transaction (training sets, registered with each model).
FEATURE_SERVICE: Final = "fraud_v1"
#: What serving reads to compute FEATURE_SERVICE at request time.
ONLINE_FEATURE_SERVICE: Final = "fraud_v1_online"

# entities and their join keys ----------------------------------------------------------------
CUSTOMER_ENTITY: Final = "customer"
TERMINAL_ENTITY: Final = "terminal"
CUSTOMER_ID: Final = c.CUSTOMER_ID
TERMINAL_ID: Final = c.TERMINAL_ID

# columns every source carries ------------------------------------------------------------------
EVENT_TIMESTAMP: Final = "event_timestamp"
CREATED: Final = "created"

# feature views -----------------------------------------------------------------------------------
CUSTOMER_SPENDING: Final = "customer_spending"
TERMINAL_RISK: Final = "terminal_risk"
CUSTOMER_HISTORY: Final = "customer_history"
TERMINAL_HISTORY: Final = "terminal_history"

# fields of the history views ------------------------------------------------------------------
TX_TIMESTAMPS_US: Final = "TX_TIMESTAMPS_US"
TX_AMOUNTS: Final = "TX_AMOUNTS"
TX_IDS: Final = "TX_IDS"
CUSTOMER_HISTORY_FIELDS: Final = (TX_TIMESTAMPS_US, TX_AMOUNTS, TX_IDS)
LABEL_AVAILABLE_US: Final = "LABEL_AVAILABLE_US"
LABEL_FRAUD: Final = "LABEL_FRAUD"
TERMINAL_HISTORY_FIELDS: Final = (LABEL_AVAILABLE_US, LABEL_FRAUD)

# sources and their files (under the store's data folder) --------------------------------------
TRANSACTION_FEATURES_SOURCE: Final = "transaction_features"
CUSTOMER_HISTORY_SOURCE: Final = "customer_history_snapshot"
TERMINAL_HISTORY_SOURCE: Final = "terminal_history_snapshot"
CUSTOMER_PUSH_SOURCE: Final = "customer_transactions_push"
TRANSACTION_FEATURES_FILE: Final = "transaction_features.parquet"
CUSTOMER_HISTORY_FILE: Final = "customer_history.parquet"
TERMINAL_HISTORY_FILE: Final = "terminal_history.parquet"

#: The tag that names the feature service a view belongs to.
CONTRACT_TAG: Final = "contract"
