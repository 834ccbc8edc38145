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
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
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
from pydantic import Field, model_validator

from vigil import contract as c
from vigil.data.ingest import RawTransactions, read_transactions
from vigil.errors import ValidationFailed
from vigil.settings import StrictModel

JSON_REPORT = "validation.json"
HTML_REPORT = "validation.html"
SUITE_NAME = "vigil_raw_transactions"

#: Derived columns added to (a shallow copy of) the frame for the expectations that need them.
_FILE = "__FILE"
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

Progress = Callable[[str], None]


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
class CheckResult:
    """The outcome of one check: a GE expectation, or a conversion check from ingestion."""

    name: str
    #: GE expectation type (``expect_column_values_to_be_unique``) or
    #: ``vigil.data.ingest conversion``.
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    #: The measured value of aggregate expectations (fraud share, row count, column type).
    observed: str | int | float | None = None
    #: Some unexpected values, shown as text (strings quoted).
    examples: tuple[str, ...] = ()
    #: Some unexpected rows: file, ``TRANSACTION_ID`` and the columns that matter.
    rows: tuple[dict[str, str], ...] = ()
    #: Set when GE could not evaluate the expectation.
    error: str | None = None

    def line(self) -> str:
        """One line for people: ``✗ TX_AMOUNT >= 0: 3 unexpected (0.01%), e.g. [-5.0]``."""
        parts = [f"{'✓' if self.success else '✗'} {self.name}"]
        details = []
        if self.unexpected_count is not None and (self.unexpected_count or not self.success):
            percent = f" ({self.unexpected_percent:.3g}%)" if self.unexpected_percent else ""
            details.append(f"{self.unexpected_count:,} unexpected{percent}")
        if self.observed is not None:
            details.append(f"observed {_format_observed(self.observed)}")
        if self.examples:
            details.append(f"e.g. [{', '.join(self.examples)}]")
        if self.error:
            details.append(f"error: {self.error}")
        if details:
            parts.append(": " + ", ".join(details))
        return "".join(parts)


@dataclasses.dataclass(frozen=True)
class DataSummary:
    rows: int
    files: int
    #: Files whose name carries a date, i.e. daily files.
    daily_files: int
    first: str | None
    last: str | None
    frauds: int | None


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    source: str
    success: bool
    checks: tuple[CheckResult, ...]
    summary: DataSummary
    config: ValidationConfig
    seconds: float
    great_expectations_version: str = gx.__version__

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(check for check in self.checks if not check.success)

    def check(self, name: str) -> CheckResult:
        """The check called ``name`` (KeyError when there is none)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "success": self.success,
            "failed": [check.name for check in self.failed],
            "summary": dataclasses.asdict(self.summary),
            "checks": [dataclasses.asdict(check) for check in self.checks],
            "config": self.config.model_dump(),
            "seconds": self.seconds,
            "great_expectations_version": self.great_expectations_version,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def headline(self) -> str:
        s = self.summary
        span = f", {s.first} .. {s.last}" if s.first else ""
        verdict = "passed" if self.success else f"FAILED ({len(self.failed)} failed)"
        return (
            f"validation of {self.source}: {s.rows:,} rows in {s.files} file(s){span}; "
            f"{len(self.checks)} checks {verdict} in {self.seconds:.1f} s"
        )

    def to_text(self) -> str:
        """The console summary: a headline and one ✓/✗ line per check."""
        return "\n".join([self.headline(), *(f"  {check.line()}" for check in self.checks)])

    def failure_message(self) -> str:
        failed = self.failed
        return f"{len(failed)} of {len(self.checks)} checks failed on {self.source}: " + "; ".join(
            check.line()[2:] for check in failed
        )

    def to_html(self) -> str:
        return _render_html(self)


def validate_transactions(
    path: str | Path,
    config: ValidationConfig | None = None,
    report_dir: Path | None = None,
    progress: Progress | None = None,
) -> ValidationResult:
    """Validate raw transactions at ``path`` (file or folder); write reports to ``report_dir``.

    Raises :class:`~vigil.errors.DataError` when the data cannot be read at all.
    """
    config = config or ValidationConfig()
    t0 = time.perf_counter()
    _say(progress, f"reading {path}")
    raw = read_transactions(path, on_bad_values="null")
    result = validate_raw(raw, config, source=str(path), progress=progress)
    result = dataclasses.replace(result, seconds=round(time.perf_counter() - t0, 2))
    if report_dir is not None:
        write_reports(result, report_dir)
    return result


def require_valid(
    path: str | Path,
    config: ValidationConfig | None = None,
    report_dir: Path | None = None,
    progress: Progress | None = None,
) -> ValidationResult:
    """:func:`validate_transactions`, raising :class:`ValidationFailed` when a check fails."""
    result = validate_transactions(path, config, report_dir, progress)
    if not result.success:
        raise ValidationFailed(result.failure_message(), result)
    return result


def validate_raw(
    raw: RawTransactions,
    config: ValidationConfig | None = None,
    source: str = "transactions",
    progress: Progress | None = None,
) -> ValidationResult:
    """Run the suite on transactions already read (with ``on_bad_values="null"``)."""
    config = config or ValidationConfig()
    t0 = time.perf_counter()
    origin = _time_origin(raw.frame)
    frame = _with_derived_columns(raw, origin)
    checks = _suite_checks(
        frame, config, has_daily_files=any(f.day for f in raw.files), origin=origin
    )
    _say(progress, f"running {len(checks)} expectations on {len(frame):,} rows")
    suite_result = _run_suite(frame, checks, config)
    by_key = _results_by_key(suite_result.results)
    checks_out = [*_conversion_checks(raw, config), *(
        _check_result(check, by_key[_expectation_key(check.expectation)], config)
        for check in checks
    )]
    return ValidationResult(
        source=source,
        success=all(check.success for check in checks_out),
        checks=tuple(checks_out),
        summary=_summary(raw),
        config=config,
        seconds=round(time.perf_counter() - t0, 2),
    )


def write_reports(result: ValidationResult, report_dir: Path) -> tuple[Path, Path]:
    """Write ``validation.json`` and ``validation.html`` into ``report_dir`` (created)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = report_dir / JSON_REPORT, report_dir / HTML_REPORT
    json_path.write_text(result.to_json(), encoding="utf-8")
    html_path.write_text(result.to_html(), encoding="utf-8")
    return json_path, html_path


# --- the suite -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Check:
    name: str
    column: str | None
    expectation: Expectation
    #: Frame column whose values in unexpected rows are the examples (default: ``column``).
    example_column: str | None = None
    #: Further frame columns shown with each unexpected row: column -> label.
    row_columns: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _suite_checks(
    frame: pd.DataFrame, config: ValidationConfig, *, has_daily_files: bool, origin: int | None
) -> list[_Check]:
    present = [col for col in c.RAW_COLUMNS if col in frame.columns]
    checks = [_Check(f"{col} present", col, gxe.ExpectColumnToExist(column=col))
              for col in c.REQUIRED_COLUMNS]
    checks += [_type_check(col) for col in present]
    checks += [_Check(f"{col} not null", col, gxe.ExpectColumnValuesToNotBeNull(column=col))
               for col in c.REQUIRED_COLUMNS]
    checks += [
        _Check(f"{c.TX_AMOUNT} ≥ 0", c.TX_AMOUNT,
               gxe.ExpectColumnValuesToBeBetween(column=c.TX_AMOUNT, min_value=0)),
        _Check(f"{c.TX_AMOUNT} finite", c.TX_AMOUNT, gxe.ExpectColumnValuesToNotBeInSet(
            column=c.TX_AMOUNT, value_set=[math.inf, -math.inf])),
        _Check(f"{c.TX_FRAUD} in {{0, 1}}", c.TX_FRAUD,
               gxe.ExpectColumnValuesToBeInSet(column=c.TX_FRAUD, value_set=[0, 1])),
        _Check(f"{c.TRANSACTION_ID} unique", c.TRANSACTION_ID,
               gxe.ExpectColumnValuesToBeUnique(column=c.TRANSACTION_ID)),
        _Check(f"row count ≥ {config.min_rows:,}", None,
               gxe.ExpectTableRowCountToBeBetween(min_value=config.min_rows)),
        _Check(
            f"share of frauds (mean {c.TX_FRAUD}) in "
            f"[{config.min_fraud_share:g}, {config.max_fraud_share:g}]",
            c.TX_FRAUD,
            gxe.ExpectColumnMeanToBeBetween(
                column=c.TX_FRAUD, min_value=config.min_fraud_share,
                max_value=config.max_fraud_share,
            ),
        ),
        _Check(
            f"{c.TX_TIME_DAYS} = {c.TX_TIME_SECONDS} // {c.SECONDS_PER_DAY}", c.TX_TIME_DAYS,
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A=c.TX_TIME_DAYS, column_B=_DAYS_FROM_SECONDS,
                ignore_row_if="either_value_is_missing",
            ),
            row_columns={c.TX_TIME_SECONDS: c.TX_TIME_SECONDS},
        ),
    ]
    if has_daily_files:
        checks.append(_Check(
            f"{c.TX_DATETIME} inside the file's day", c.TX_DATETIME,
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A=_TX_DAY, column_B=_FILE_DAY, ignore_row_if="either_value_is_missing"
            ),
        ))
    if origin is not None:
        checks.append(_Check(
            f"{c.TX_DATETIME} = {_timestamp(origin)} + {c.TX_TIME_SECONDS}", c.TX_DATETIME,
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A=c.TX_DATETIME, column_B=_EXPECTED_DATETIME,
                ignore_row_if="either_value_is_missing",
            ),
            row_columns={c.TX_TIME_SECONDS: c.TX_TIME_SECONDS, _EXPECTED_DATETIME: "expected"},
        ))
    return checks


def _type_check(col: str) -> _Check:
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
    return _Check(name, col, expectation)


def _with_derived_columns(raw: RawTransactions, origin: int | None) -> pd.DataFrame:
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
        _FILE: pd.Categorical.from_codes(
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


def _time_origin(frame: pd.DataFrame) -> int | None:
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


def _gx_context() -> Any:
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_suite(
    frame: pd.DataFrame, checks: Sequence[_Check], config: ValidationConfig
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
    check: _Check, result: ExpectationValidationResult, config: ValidationConfig
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


def _row(rows: pd.DataFrame, i: int, check: _Check) -> dict[str, str]:
    record = rows.iloc[i]
    out = {"file": str(record[_FILE]), c.TRANSACTION_ID: _cell(record[c.TRANSACTION_ID])}
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


def _format_observed(value: str | int | float) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return value


# --- conversion checks and the data summary ------------------------------------------------


def _conversion_checks(raw: RawTransactions, config: ValidationConfig) -> list[CheckResult]:
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


def _summary(raw: RawTransactions) -> DataSummary:
    frame = raw.frame
    when = frame[c.TX_DATETIME]
    first, last = when.min(), when.max()
    return DataSummary(
        rows=len(frame),
        files=len(raw.files),
        daily_files=sum(1 for f in raw.files if f.day),
        first=None if pd.isna(first) else str(first),
        last=None if pd.isna(last) else str(last),
        frauds=int(frame[c.TX_FRAUD].isin([1]).sum()) if c.TX_FRAUD in frame else None,
    )


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


# --- HTML report ---------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1a7f37; } .bad { color: #c62828; font-weight: 600; }
.verdict { display: inline-block; padding: .2em .7em; border-radius: .3em; color: #fff; }
.verdict.ok { background: #1a7f37; } .verdict.bad { background: #c62828; }
code { font-size: 92%; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _render_html(result: ValidationResult) -> str:
    s = result.summary
    verdict = (
        '<span class="verdict ok">passed</span>' if result.success
        else f'<span class="verdict bad">failed: {len(result.failed)} of '
        f"{len(result.checks)} checks</span>"
    )
    summary_rows = [
        ("source", result.source), ("rows", f"{s.rows:,}"),
        ("files", f"{s.files:,} ({s.daily_files:,} daily)"),
        ("first transaction", s.first or "–"), ("last transaction", s.last or "–"),
        ("frauds", "–" if s.frauds is None else f"{s.frauds:,}"),
        ("fraud share bounds", f"{result.config.min_fraud_share:g} .. "
                               f"{result.config.max_fraud_share:g}"),
        ("seconds", f"{result.seconds:.2f}"),
        ("Great Expectations", result.great_expectations_version),
    ]
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Vigil validation: {_e(result.source)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Validation of raw transactions {verdict}</h1>",
        "<table>", *(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in summary_rows),
        "</table>",
        "<h2>Checks</h2>",
        "<table><tr><th></th><th>check</th><th>expectation</th><th>unexpected</th>"
        "<th>%</th><th>observed</th><th>examples</th></tr>",
        *(_html_check_row(check) for check in result.checks),
        "</table>",
    ]
    for check in result.failed:
        parts.append(f'<h2 class="bad">✗ {_e(check.name)}</h2>')
        if check.error:
            parts.append(f"<p>Error: <code>{_e(check.error)}</code></p>")
        if check.rows:
            parts.append(_html_rows_table(check.rows))
    parts.append(f"<p>Machine-readable: <code>{JSON_REPORT}</code>.</p></body></html>")
    return "\n".join(parts) + "\n"


def _html_check_row(check: CheckResult) -> str:
    mark = '<span class="ok">✓</span>' if check.success else '<span class="bad">✗</span>'
    count = "" if check.unexpected_count is None else f"{check.unexpected_count:,}"
    percent = "" if check.unexpected_percent is None else f"{check.unexpected_percent:.3g}"
    observed = "" if check.observed is None else _format_observed(check.observed)
    examples = ", ".join(check.examples)
    return (
        f"<tr><td>{mark}</td><td>{_e(check.name)}</td><td><code>{_e(check.expectation)}</code></td>"
        f'<td class="num">{_e(count)}</td><td class="num">{_e(percent)}</td>'
        f"<td>{_e(observed)}</td><td><code>{_e(examples)}</code>"
        f"{'<br>' + _e(check.error) if check.error else ''}</td></tr>"
    )


def _html_rows_table(rows: Sequence[Mapping[str, str]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{_e(col)}</th>" for col in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(row.get(col, ''))}</td>" for col in columns) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"
