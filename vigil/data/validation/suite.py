"""The suite: which checks the gate runs, with the thresholds that shape them.

:func:`suite_checks` names each Great Expectations expectation of the suite for a data set;
:func:`with_derived_columns` adds the columns some of them compare (the file's day, the
expected ``TX_DATETIME``); :func:`conversion_checks` turns what ingestion could not convert
into "parseable" checks. :class:`ValidationConfig` holds the thresholds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.expectations.expectation import Expectation
from pydantic import Field, model_validator

from vigil import contract as c
from vigil.data.ingest import RawTransactions
from vigil.data.validation.report import CheckResult
from vigil.settings import StrictModel

SUITE_NAME = "vigil_raw_transactions"

#: Derived columns added to (a shallow copy of) the frame for the expectations that need them.
FILE_COLUMN = "__FILE"
_TX_DAY = "__TX_DAY"
_FILE_DAY = "__FILE_DAY"
_DAYS_FROM_SECONDS = "__DAYS_FROM_SECONDS"
_EXPECTED_DATETIME = "__EXPECTED_DATETIME"

_INGEST = "vigil.data.ingest conversion"
_INTEGER_TYPES = ("int8", "int16", "int32", "int64", "Int64Dtype")
#: What every contract column converts to, as named in check names.
_TYPE_LABELS = {
    **{col: "id (integer or non-empty string)" for col in c.ID_COLUMNS},
    c.TX_DATETIME: "timestamp",
    c.TX_AMOUNT: "number",
    **{col: "integer" for col in c.INTEGER_COLUMNS},
}


class ValidationConfig(StrictModel):
    """Thresholds of the gate. Defaults suit the handbook's data (0.84% frauds)."""

    #: Lowest acceptable mean of ``TX_FRAUD``: below it labels are probably missing (0.01%).
    min_fraud_share: float = Field(default=0.0001, ge=0, le=1)
    #: Highest acceptable mean of ``TX_FRAUD``: above it labels are probably wrong (20%).
    max_fraud_share: float = Field(default=0.2, ge=0, le=1)
    #: Fewer rows than this fail the gate (an empty data set is never valid by default).
    min_rows: int = Field(default=1, ge=0)
    #: How many unexpected values (and rows) each failed check shows.
    examples: int = Field(default=5, ge=1, le=100)

    @model_validator(mode="after")
    def _share_bounds_ordered(self) -> ValidationConfig:
        if self.min_fraud_share > self.max_fraud_share:
            raise ValueError(
                f"min_fraud_share {self.min_fraud_share} > max_fraud_share {self.max_fraud_share}"
            )
        return self


@dataclasses.dataclass(frozen=True)
class Check:
    """One expectation of the suite, with the name people read and what its rows show."""

    name: str
    column: str | None
    expectation: Expectation
    #: Frame column whose values in unexpected rows are the examples (default: ``column``).
    example_column: str | None = None
    #: Further frame columns shown with each unexpected row: column -> label.
    row_columns: Mapping[str, str] = dataclasses.field(default_factory=dict)


def suite_checks(
    frame: pd.DataFrame, config: ValidationConfig, *, has_daily_files: bool, origin: int | None
) -> list[Check]:
    """The expectations for ``frame`` (with its derived columns): the file-day check only for
    daily files, the origin check only when some row has both time columns."""
    present = [col for col in c.RAW_COLUMNS if col in frame.columns]
    checks = [Check(f"{col} present", col, gxe.ExpectColumnToExist(column=col))
              for col in c.REQUIRED_COLUMNS]
    checks += [_type_check(col) for col in present]
    checks += [Check(f"{col} not null", col, gxe.ExpectColumnValuesToNotBeNull(column=col))
               for col in c.REQUIRED_COLUMNS]
    checks += [
        Check(f"{c.TX_AMOUNT} ≥ 0", c.TX_AMOUNT,
               gxe.ExpectColumnValuesToBeBetween(column=c.TX_AMOUNT, min_value=0)),
        Check(f"{c.TX_AMOUNT} finite", c.TX_AMOUNT, gxe.ExpectColumnValuesToNotBeInSet(
            column=c.TX_AMOUNT, value_set=[math.inf, -math.inf])),
        Check(f"{c.TX_FRAUD} in {{0, 1}}", c.TX_FRAUD,
               gxe.ExpectColumnValuesToBeInSet(column=c.TX_FRAUD, value_set=[0, 1])),
        Check(f"{c.TRANSACTION_ID} unique", c.TRANSACTION_ID,
               gxe.ExpectColumnValuesToBeUnique(column=c.TRANSACTION_ID)),
        Check(f"row count ≥ {config.min_rows:,}", None,
               gxe.ExpectTableRowCountToBeBetween(min_value=config.min_rows)),
        Check(
            f"share of frauds (mean {c.TX_FRAUD}) in "
            f"[{config.min_fraud_share:g}, {config.max_fraud_share:g}]",
            c.TX_FRAUD,
            gxe.ExpectColumnMeanToBeBetween(
                column=c.TX_FRAUD, min_value=config.min_fraud_share,
                max_value=config.max_fraud_share,
            ),
        ),
        Check(
            f"{c.TX_TIME_DAYS} = {c.TX_TIME_SECONDS} // {c.SECONDS_PER_DAY}", c.TX_TIME_DAYS,
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A=c.TX_TIME_DAYS, column_B=_DAYS_FROM_SECONDS,
                ignore_row_if="either_value_is_missing",
            ),
            row_columns={c.TX_TIME_SECONDS: c.TX_TIME_SECONDS},
        ),
    ]
    if has_daily_files:
        checks.append(Check(
            f"{c.TX_DATETIME} inside the file's day", c.TX_DATETIME,
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A=_TX_DAY, column_B=_FILE_DAY, ignore_row_if="either_value_is_missing"
            ),
        ))
    if origin is not None:
        checks.append(Check(
            f"{c.TX_DATETIME} = {_timestamp(origin)} + {c.TX_TIME_SECONDS}", c.TX_DATETIME,
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A=c.TX_DATETIME, column_B=_EXPECTED_DATETIME,
                ignore_row_if="either_value_is_missing",
            ),
            row_columns={c.TX_TIME_SECONDS: c.TX_TIME_SECONDS, _EXPECTED_DATETIME: "expected"},
        ))
    return checks


def _type_check(col: str) -> Check:
    name = f"{col} has the contract's type"
    expectation: Expectation
    if col in c.ID_COLUMNS:
        expectation = gxe.ExpectColumnValuesToBeOfType(column=col, type_="str")
    elif col == c.TX_DATETIME:
        expectation = gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=["datetime64[us]"])
    elif col == c.TX_AMOUNT:
        expectation = gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=["float64"])
    else:
        expectation = gxe.ExpectColumnValuesToBeInTypeList(
            column=col, type_list=list(_INTEGER_TYPES)
        )
    return Check(name, col, expectation)


def with_derived_columns(raw: RawTransactions, origin: int | None) -> pd.DataFrame:
    """The frame plus the columns some expectations compare, as one consolidated frame.

    Built in one go: a frame grown column by column keeps one block per column, and GE copies
    the domain frame for most metrics, consolidating the blocks again on every copy (3-4 s per
    run on the handbook-size data set).
    """
    frame = raw.frame
    file_of_rows = raw.file_of_rows()
    file_days = np.array(
        [np.datetime64(f.day, "us") if f.day else np.datetime64("NaT", "us") for f in raw.files],
        dtype="datetime64[us]",
    )
    derived: dict[str, Any] = {
        FILE_COLUMN: pd.Categorical.from_codes(
            file_of_rows, categories=pd.Index([_file_label(f.path) for f in raw.files])
        ),
        _FILE_DAY: file_days[file_of_rows],
        _TX_DAY: frame[c.TX_DATETIME].dt.floor("D").to_numpy(),
        _DAYS_FROM_SECONDS: (frame[c.TX_TIME_SECONDS] // c.SECONDS_PER_DAY).array,
    }
    if origin is not None:
        derived[_EXPECTED_DATETIME] = _expected_datetimes(frame, origin)
    columns = {col: frame[col].array for col in frame.columns}
    return pd.DataFrame(columns | derived, index=frame.index)


def _file_label(path: Path) -> str:
    return path.name


def _seconds_and_micros(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``TX_DATETIME`` in microseconds, ``TX_TIME_SECONDS`` and where both are present."""
    when = frame[c.TX_DATETIME]
    seconds = frame[c.TX_TIME_SECONDS]
    valid = (when.notna() & seconds.notna()).to_numpy()
    micros = when.to_numpy().astype("datetime64[us]").view("int64")
    return micros, seconds.to_numpy(dtype="int64", na_value=0), valid


def time_origin(frame: pd.DataFrame) -> int | None:
    """The most common ``TX_DATETIME - TX_TIME_SECONDS`` in microseconds since the epoch;
    None when no row has both."""
    micros, seconds, valid = _seconds_and_micros(frame)
    if not valid.any():
        return None
    # Wrap-around on absurd seconds is harmless: such rows simply do not match the origin.
    origins = (micros - seconds * 1_000_000)[valid]
    values, counts = np.unique(origins, return_counts=True)
    return int(values[np.argmax(counts)])


def _timestamp(micros: int) -> pd.Timestamp:
    return pd.Timestamp(micros, unit="us")


def _expected_datetimes(frame: pd.DataFrame, origin: int) -> np.ndarray:
    _, seconds, valid = _seconds_and_micros(frame)
    expected = (origin + seconds * 1_000_000).view("datetime64[us]")
    return np.where(valid, expected, np.datetime64("NaT", "us"))


def conversion_checks(raw: RawTransactions, config: ValidationConfig) -> list[CheckResult]:
    """One "parseable" check per contract column, from what ingestion could not convert."""
    rows = len(raw.frame)
    out = []
    for col in c.RAW_COLUMNS:
        if col not in raw.frame.columns:
            continue
        found = [coercion for coercion in raw.coercions if coercion.column == col]
        count = sum(coercion.count for coercion in found)
        examples = [example for coercion in found for example in coercion.examples]
        out.append(CheckResult(
            name=f"{col} parseable as {_TYPE_LABELS[col]}",
            expectation=_INGEST,
            column=col,
            success=count == 0,
            unexpected_count=count,
            unexpected_percent=round(100.0 * count / rows, 6) if rows else 0.0,
            examples=tuple(examples[: config.examples]),
            rows=tuple(
                {"file": _file_label(Path(coercion.file)), "unexpected": str(coercion.count),
                 "expected": coercion.expected, "examples": ", ".join(coercion.examples)}
                for coercion in found[: config.examples]
            ),
        ))
    return out
