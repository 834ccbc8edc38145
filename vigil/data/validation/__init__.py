"""The validation gate: a Great Expectations suite for raw transactions (docs/DESIGN.md).

The pipeline's first step. :func:`validate_transactions` reads a file or folder with
:func:`vigil.data.ingest.read_transactions` in ``on_bad_values="null"`` mode, so that every problem
is reported instead of the first, and returns a :class:`ValidationResult`; :func:`require_valid`
raises :class:`~vigil.errors.ValidationFailed` when any check fails, which stops the pipeline.

What is checked:

* schema and types: every required column present with the contract's type, and every value
  converted to that type (the values ingestion could not convert, e.g. ``'yesterday'`` in
  ``TX_DATETIME``, fail a "parseable" check with counts and examples);
* no nulls in the required columns (GE's between / in-set expectations skip nulls and NaN, so
  each of them is paired with a not-null expectation);
* ``TX_AMOUNT >= 0`` and finite; ``TX_FRAUD`` in {0, 1}; ``TRANSACTION_ID`` unique;
* every ``TX_DATETIME`` inside the day named by its file, for daily files (``YYYY-MM-DD`` in the
  name); rows of files without a date in their name are not checked;
* ``TX_TIME_DAYS == TX_TIME_SECONDS // 86400`` and ``TX_DATETIME == origin + TX_TIME_SECONDS``
  for one origin shared by all rows (the handbook's start date at midnight). The origin is the
  most common value of ``TX_DATETIME - TX_TIME_SECONDS``, so a data set may start on any date
  and a single day of a longer data set validates too;
* at least :attr:`ValidationConfig.min_rows` rows and a sane share of frauds
  (:attr:`ValidationConfig.min_fraud_share` .. :attr:`ValidationConfig.max_fraud_share`).

Files that cannot be read at all (garbage bytes, a missing required column, a column of an
unconvertible type) raise :class:`~vigil.errors.DataError` from ingestion, naming the file and
the column; there is no data to run a suite on then.

Results are read from GE by expectation type and column, never by position.

One concept per module: :mod:`~vigil.data.validation.suite` (which checks, their thresholds),
:mod:`~vigil.data.validation.runner` (Great Expectations runs the suite),
:mod:`~vigil.data.validation.report` (results as text, JSON and HTML) and
:mod:`~vigil.data.validation.gate` (read, run, decide).
"""

from vigil.data.validation.gate import Progress, require_valid, validate_raw, validate_transactions
from vigil.data.validation.report import (
    HTML_REPORT,
    JSON_REPORT,
    CheckResult,
    SourceSummary,
    ValidationResult,
    write_reports,
)
from vigil.data.validation.suite import SUITE_NAME, ValidationConfig

__all__ = [
    "HTML_REPORT",
    "JSON_REPORT",
    "SUITE_NAME",
    "CheckResult",
    "Progress",
    "SourceSummary",
    "ValidationConfig",
    "ValidationResult",
    "require_valid",
    "validate_raw",
    "validate_transactions",
    "write_reports",
]
