"""The gate's results and their reports: console text, ``validation.json``, ``validation.html``."""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import great_expectations as gx

from vigil.data.summary import TransactionSummary, summarize_transactions

if TYPE_CHECKING:
    from vigil.data.ingest import RawTransactions
    from vigil.data.validation.suite import ValidationConfig

JSON_REPORT = "validation.json"
HTML_REPORT = "validation.html"


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
class SourceSummary:
    """What the gate read: the transactions, and the files they came from."""

    transactions: TransactionSummary
    files: int
    #: Files whose name carries a date, i.e. daily files.
    daily_files: int

    @classmethod
    def of(cls, raw: RawTransactions) -> SourceSummary:
        return cls(
            transactions=summarize_transactions(raw.frame),
            files=len(raw.files),
            daily_files=sum(1 for f in raw.files if f.day),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions.to_dict(),
            "files": self.files,
            "daily_files": self.daily_files,
        }


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    source: str
    success: bool
    checks: tuple[CheckResult, ...]
    summary: SourceSummary
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
            "summary": self.summary.to_dict(),
            "checks": [dataclasses.asdict(check) for check in self.checks],
            "config": self.config.model_dump(),
            "seconds": self.seconds,
            "great_expectations_version": self.great_expectations_version,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def headline(self) -> str:
        s, t = self.summary, self.summary.transactions
        span = f", {t.first} .. {t.last}" if t.first is not None else ""
        verdict = "passed" if self.success else f"FAILED ({len(self.failed)} failed)"
        return (
            f"validation of {self.source}: {t.rows:,} rows in {s.files} file(s){span}; "
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



def write_reports(result: ValidationResult, report_dir: Path) -> tuple[Path, Path]:
    """Write ``validation.json`` and ``validation.html`` into ``report_dir`` (created)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = report_dir / JSON_REPORT, report_dir / HTML_REPORT
    json_path.write_text(result.to_json(), encoding="utf-8")
    html_path.write_text(result.to_html(), encoding="utf-8")
    return json_path, html_path



def _format_observed(value: str | int | float) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return value



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
    s, t = result.summary, result.summary.transactions
    verdict = (
        '<span class="verdict ok">passed</span>' if result.success
        else f'<span class="verdict bad">failed: {len(result.failed)} of '
        f"{len(result.checks)} checks</span>"
    )
    summary_rows = [
        ("source", result.source), ("rows", f"{t.rows:,}"),
        ("files", f"{s.files:,} ({s.daily_files:,} daily)"),
        ("first transaction", "–" if t.first is None else t.first),
        ("last transaction", "–" if t.last is None else t.last),
        ("frauds", "–" if t.frauds is None else f"{t.frauds:,}"),
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
