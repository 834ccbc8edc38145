"""The raw transaction data contract (docs/DESIGN.md, "Data contract (fraud)").

Column names follow the public simulator of the handbook "Reproducible Machine Learning for
Credit Card Fraud Detection" (Le Borgne et al.).
"""

from __future__ import annotations

from typing import Final

TRANSACTION_ID: Final = "TRANSACTION_ID"
TX_DATETIME: Final = "TX_DATETIME"
CUSTOMER_ID: Final = "CUSTOMER_ID"
TERMINAL_ID: Final = "TERMINAL_ID"
TX_AMOUNT: Final = "TX_AMOUNT"
TX_TIME_SECONDS: Final = "TX_TIME_SECONDS"
TX_TIME_DAYS: Final = "TX_TIME_DAYS"
TX_FRAUD: Final = "TX_FRAUD"
TX_FRAUD_SCENARIO: Final = "TX_FRAUD_SCENARIO"

RAW_COLUMNS: Final = (
    TRANSACTION_ID,
    TX_DATETIME,
    CUSTOMER_ID,
    TERMINAL_ID,
    TX_AMOUNT,
    TX_TIME_SECONDS,
    TX_TIME_DAYS,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
)
OPTIONAL_COLUMNS: Final = (TX_FRAUD_SCENARIO,)
REQUIRED_COLUMNS: Final = tuple(c for c in RAW_COLUMNS if c not in OPTIONAL_COLUMNS)
ID_COLUMNS: Final = (TRANSACTION_ID, CUSTOMER_ID, TERMINAL_ID)
INTEGER_COLUMNS: Final = (TX_TIME_SECONDS, TX_TIME_DAYS, TX_FRAUD, TX_FRAUD_SCENARIO)

#: What identifies a transaction in every derived table (features, datasets, inference log):
#: the first columns of each, in this order.
KEY_COLUMNS: Final = (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID)

#: Fields a scoring request carries (the raw schema minus what only hindsight knows).
REQUEST_COLUMNS: Final = (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT)

#: A model's decision on a transaction (score at or above its threshold: fraud), as the model
#: server answers it, writes it to the inference log and labels its metrics; the monitors read
#: the log in these words.
FRAUD_DECISION: Final = "fraud"
LEGIT_DECISION: Final = "legit"
DECISIONS: Final = (FRAUD_DECISION, LEGIT_DECISION)

SECONDS_PER_DAY: Final = 86_400
#: Labels arrive this many days after the transaction (handbook assumption).
LABEL_DELAY_DAYS: Final = 7
