"""Step 1, validate: the Great Expectations gate on raw transactions
(:mod:`vigil.data.validation`)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from pydantic import ValidationError as PydanticValidationError

from components.runtime import say
from vigil.data.validation import SourceSummary, ValidationConfig, validate_transactions
from vigil.errors import ConfigError, ValidationFailed

STEP = "validate"


@dataclasses.dataclass(frozen=True)
class ValidationOutcome:
    """The validate step's result: what it read and how many checks passed."""

    summary: SourceSummary
    checks: int

    def to_dict(self) -> dict[str, object]:
        return {"summary": self.summary.to_dict(), "checks": self.checks}


def validation_config(min_fraud_share: float, max_fraud_share: float) -> ValidationConfig:
    """The gate's thresholds from the pipeline's parameters."""
    try:
        return ValidationConfig(min_fraud_share=min_fraud_share, max_fraud_share=max_fraud_share)
    except PydanticValidationError as e:
        raise ConfigError(f"invalid fraud share bounds: {e.errors()[0]['msg']}") from e


def validate_data(
    transactions: str | Path,
    *,
    html_report: Path,
    json_report: Path,
    config: ValidationConfig | None = None,
) -> ValidationOutcome:
    """Validate the raw transactions at ``transactions``; write the HTML and JSON reports (also
    when checks fail), then raise :class:`ValidationFailed` on any failed check."""
    # GE logs its context set-up at INFO; the step's own lines say what matters.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    result = validate_transactions(
        transactions, config=config, progress=lambda message: say(STEP, message)
    )
    for path, text in ((html_report, result.to_html()), (json_report, result.to_json())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    say(STEP, result.headline())
    for check in result.failed:
        say(STEP, check.line())
    if not result.success:
        raise ValidationFailed(f"{result.failure_message()} (report: {html_report})", result)
    return ValidationOutcome(summary=result.summary, checks=len(result.checks))
