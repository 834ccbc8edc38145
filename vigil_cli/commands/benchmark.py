"""``vigil benchmark handbook``: the handbook's protocol on any raw transactions.

A thin adapter over :mod:`vigil_cli.handbook`; progress goes to the log, one line per fold.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import cast

import click

from vigil.data.ingest import read_transactions
from vigil_cli import handbook as bh

log = logging.getLogger(__name__)


@click.group()
def benchmark() -> None:
    """Benchmarks of Vigil's fraud model."""


@benchmark.command()
@click.option(
    "--transactions",
    "path",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Raw transactions in the handbook schema: a parquet/CSV file or a folder of them.",
)
@click.option(
    "--protocol",
    type=click.Choice(bh.PROTOCOLS),
    required=True,
    help="ch3: one train/delay/test split; ch5: 4 prequential test folds, mean ± std.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the results (per fold, aggregated, choices, timings) as JSON.",
)
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Anchor: the first training day of chapter 3 (the book: 2018-07-25). Default: the "
    "book's when the data covers it, else 115 days after the data's first day.",
)
@click.option(
    "--select",
    "selection",
    type=click.Choice(bh.SELECTIONS),
    default=None,
    help="How the validation folds choose hyperparameters: per metric (ch5 default, the "
    "book's) or one configuration by the named metric (ch3 default: average_precision).",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    help="Also run Vigil's model on the book's 15 features only.",
)
@click.option(
    "--reference/--no-reference",
    default=True,
    show_default=True,
    help="Also run the book's logistic regression on this data.",
)
@click.option("--quick", is_flag=True, help="A two-candidate grid (smoke tests).")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="LightGBM threads per fit (1 is fastest on a busy 2-core machine).",
)
def handbook(
    path: Path,
    protocol: str,
    json_out: Path | None,
    start: datetime | None,
    selection: str | None,
    baseline: bool,
    reference: bool,
    quick: bool,
    threads: int,
) -> None:
    """Reproduce the handbook's evaluation protocol and print Vigil's AUC ROC, AP and
    Card Precision@100 beside the book's published figures."""
    t0 = time.perf_counter()
    transactions = read_transactions(path).frame
    read_seconds = time.perf_counter() - t0
    log.info("read %s transactions from %s in %.1f s", f"{len(transactions):,}", path, read_seconds)
    data = bh.prepare(transactions)
    del transactions
    log.info("features in %.1f s", data.summary.feature_seconds)
    result = bh.run_benchmark(
        data,
        cast(bh.ProtocolName, protocol),
        start=start.date() if start else None,
        families=bh.default_families(
            quick=quick,
            baseline=baseline,
            reference=reference,
            num_threads=threads,
        ),
        selection=cast(bh.Selection | None, selection),
    )
    click.echo(bh.format_table(result))
    if json_out:
        payload = {
            **result.to_dict(),
            "source": str(path),
            "options": {"quick": quick, "threads": threads, "start": start and start.date()},
            "timings": {
                "read_seconds": round(read_seconds, 2),
                "feature_seconds": round(data.summary.feature_seconds, 2),
                "protocol_seconds": round(result.seconds, 1),
                "total_seconds": round(time.perf_counter() - t0, 1),
            },
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        click.echo(f"wrote {json_out}")
