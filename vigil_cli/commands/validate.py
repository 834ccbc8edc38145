"""``vigil validate``: the validation gate on raw transactions (see :mod:`vigil.data.validation`).

Exit codes (through :func:`vigil_cli.cli.main`): 0 when every check passes, 1 when a check fails
(:class:`~vigil.errors.ValidationFailed`), 2 when the data cannot be read at all
(:class:`~vigil.errors.DataError`, naming the file and the column).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
from pydantic import ValidationError

from vigil.data.validation import HTML_REPORT, JSON_REPORT, ValidationConfig, validate_transactions
from vigil.errors import ValidationFailed

_DEFAULTS = ValidationConfig()


@click.command()
@click.option("--transactions", type=click.Path(path_type=Path), required=True,
              help="Parquet or CSV file, or a folder of (daily) files.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help=f"Folder for {JSON_REPORT} and {HTML_REPORT} (created).")
@click.option("--min-fraud-share", type=click.FloatRange(0, 1), default=_DEFAULTS.min_fraud_share,
              show_default=True, help="Lowest acceptable share of TX_FRAUD = 1.")
@click.option("--max-fraud-share", type=click.FloatRange(0, 1), default=_DEFAULTS.max_fraud_share,
              show_default=True, help="Highest acceptable share of TX_FRAUD = 1.")
def validate(
    transactions: Path, report_dir: Path | None, min_fraud_share: float, max_fraud_share: float
) -> None:
    """Check raw transactions against the data contract; exit 1 on violations."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # GE logs its context set-up at INFO; keep the console to the summary unless -v.
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
    try:
        config = ValidationConfig(min_fraud_share=min_fraud_share, max_fraud_share=max_fraud_share)
    except ValidationError as e:
        raise click.UsageError(f"invalid fraud share bounds: {e.errors()[0]['msg']}") from e
    result = validate_transactions(
        transactions, config=config, report_dir=report_dir,
        progress=lambda message: click.echo(message, err=True),
    )
    click.echo(result.to_text())
    if report_dir is not None:
        click.echo(f"report: {report_dir / HTML_REPORT} (JSON: {report_dir / JSON_REPORT})")
    if not result.success:
        raise ValidationFailed(result.failure_message(), result)
