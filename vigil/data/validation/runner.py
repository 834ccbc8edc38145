"""The Great Expectations runner: the suite on one frame, read back into check results.

An ephemeral GE context (in memory, no analytics, no progress bars) validates the frame with
the suite's expectations; results are read by expectation type and column, never by
position, into :class:`~vigil.data.validation.report.CheckResult`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.expectation import Expectation

from vigil import contract as c
from vigil.data.validation.report import CheckResult
from vigil.data.validation.suite import FILE_COLUMN, SUITE_NAME, Check, ValidationConfig


def run_suite(
    frame: pd.DataFrame, checks: Sequence[Check], config: ValidationConfig
) -> list[CheckResult]:
    """Validate ``frame`` with the expectations of ``checks``: one result per check, in order."""
    suite_result = _validate(frame, checks, config)
    by_key = _results_by_key(suite_result.results)
    return [
        _check_result(check, by_key[_expectation_key(check.expectation)], config)
        for check in checks
    ]


def _gx_context() -> Any:
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _validate(
    frame: pd.DataFrame, checks: Sequence[Check], config: ValidationConfig
) -> ExpectationSuiteValidationResult:
    context = _gx_context()
    batch_definition = (
        context.data_sources.add_pandas("raw_transactions")
        .add_dataframe_asset("transactions")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(
        gx.ExpectationSuite(name=SUITE_NAME, expectations=[check.expectation for check in checks])
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=SUITE_NAME, data=batch_definition, suite=suite)
    )
    # BASIC: counts and a few values, plus the first unexpected rows (to name files and ids).
    # SUMMARY/COMPLETE would also build index lists and an index "query" over *all*
    # unexpected rows, which is slow on large failing data sets and adds nothing here.
    result_format = {
        "result_format": "BASIC",
        "partial_unexpected_count": config.examples,
        "include_unexpected_rows": True,
    }
    result: ExpectationSuiteValidationResult = definition.run(
        batch_parameters={"dataframe": frame}, result_format=result_format
    )
    return result



# --- reading GE results --------------------------------------------------------------------

_Key = tuple[str, str | None, str | None]


def _key(expectation_type: str, kwargs: Mapping[str, Any]) -> _Key:
    if "column_A" in kwargs:
        return expectation_type, kwargs["column_A"], kwargs["column_B"]
    return expectation_type, kwargs.get("column"), None


def _expectation_key(expectation: Expectation) -> _Key:
    configuration = expectation.configuration
    return _key(configuration.type, configuration.kwargs)


def _results_by_key(
    results: Iterable[ExpectationValidationResult],
) -> dict[_Key, ExpectationValidationResult]:
    by_key: dict[_Key, ExpectationValidationResult] = {}
    for result in results:
        configuration = result.expectation_config
        if configuration is None:
            raise ValueError("Great Expectations returned a result without its expectation")
        key = _key(configuration.type, configuration.kwargs)
        if key in by_key:
            raise ValueError(f"two expectations share type and column: {key}")
        by_key[key] = result
    return by_key


def _check_result(
    check: Check, result: ExpectationValidationResult, config: ValidationConfig
) -> CheckResult:
    details: Mapping[str, Any] = result.result or {}
    error = "; ".join(_exception_messages(result.exception_info)) or None
    # An aggregate over no values (an empty column) is observed as None.
    observed = details.get("observed_value")
    if "observed_value" in details and observed is None:
        observed = "none"
    unexpected_rows = details.get("unexpected_rows")
    examples: tuple[str, ...] = ()
    rows: tuple[dict[str, str], ...] = ()
    if isinstance(unexpected_rows, pd.DataFrame) and len(unexpected_rows):
        unexpected_rows = unexpected_rows.head(config.examples)
        example_column = check.example_column or check.column
        if example_column is not None:
            examples = tuple(_show(v) for v in unexpected_rows[example_column])
        rows = tuple(_row(unexpected_rows, i, check) for i in range(len(unexpected_rows)))
    elif details.get("partial_unexpected_list"):
        examples = tuple(_show(v) for v in details["partial_unexpected_list"][: config.examples])
    count = details.get("unexpected_count")
    percent = details.get("unexpected_percent")
    return CheckResult(
        name=check.name,
        expectation=check.expectation.expectation_type,
        column=check.column,
        success=bool(result.success),
        unexpected_count=None if count is None else int(count),
        unexpected_percent=None if percent is None else round(float(percent), 6),
        observed=_observed(observed),
        examples=examples,
        rows=rows,
        error=error,
    )


def _row(rows: pd.DataFrame, i: int, check: Check) -> dict[str, str]:
    record = rows.iloc[i]
    out = {"file": str(record[FILE_COLUMN]), c.TRANSACTION_ID: _cell(record[c.TRANSACTION_ID])}
    if check.column is not None:
        out[check.column] = _cell(record[check.column])
    for column, label in check.row_columns.items():
        out[label] = _cell(record[column])
    return out


def _cell(value: object) -> str:
    """A value in a table of rows, where the column says what it is: strings unquoted."""
    return value if isinstance(value, str) else _show(value)


def _exception_messages(info: Mapping[str, Any] | None) -> list[str]:
    """Messages from GE's ``exception_info``: flat, or keyed by the metric that failed."""
    if not info:
        return []
    if "exception_message" in info:
        return [str(info["exception_message"])] if info["exception_message"] else []
    return [
        str(value["exception_message"])
        for value in info.values()
        if isinstance(value, Mapping) and value.get("exception_message")
    ]


def _observed(value: object) -> str | int | float | None:
    if value is None:
        return None
    value = _python(value)
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int | float):
        return value
    return _show(value)


def _python(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _show(value: object) -> str:
    """A value as people read it: strings quoted, nulls as ``null``, timestamps in ISO form."""
    value = _python(value)
    if value is None or value is pd.NA or value is pd.NaT:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, datetime):
        return str(pd.Timestamp(value))
    return str(value)

