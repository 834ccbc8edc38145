"""The gate: read raw transactions, run the suite, say whether they pass."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from vigil.data.ingest import RawTransactions, read_transactions
from vigil.data.validation.report import SourceSummary, ValidationResult, write_reports
from vigil.data.validation.runner import run_suite
from vigil.data.validation.suite import (
    ValidationConfig,
    conversion_checks,
    suite_checks,
    time_origin,
    with_derived_columns,
)
from vigil.errors import ValidationFailed

Progress = Callable[[str], None]


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
    raw = read_transactions(path, on_bad_values="null", allow_empty=True)
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
    origin = time_origin(raw.frame)
    frame = with_derived_columns(raw, origin)
    checks = suite_checks(
        frame, config, has_daily_files=any(f.day for f in raw.files), origin=origin
    )
    _say(progress, f"running {len(checks)} expectations on {len(frame):,} rows")
    checks_out = [*conversion_checks(raw, config), *run_suite(frame, checks, config)]
    return ValidationResult(
        source=source,
        success=all(check.success for check in checks_out),
        checks=tuple(checks_out),
        summary=SourceSummary.of(raw),
        config=config,
        seconds=round(time.perf_counter() - t0, 2),
    )


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
