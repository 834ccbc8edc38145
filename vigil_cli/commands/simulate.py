"""``vigil simulate``: write daily parquet files of simulated raw transactions."""

from __future__ import annotations

import json
import time
from datetime import date, datetime
from pathlib import Path

import click
from tqdm import tqdm

from vigil.data.drift import SCENARIOS, Drift
from vigil.data.simulate import (
    BOOK_FRAUDS,
    BOOK_SCENARIOS,
    BOOK_TRANSACTIONS,
    SimulationConfig,
    write_daily,
)
from vigil.data.simulate import (
    simulate as run_simulation,
)
from vigil.errors import VigilError


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the daily parquet files (created).",
)
@click.option("--customers", type=click.IntRange(min=3), default=5_000, show_default=True)
@click.option("--terminals", type=click.IntRange(min=2), default=10_000, show_default=True)
@click.option("--days", type=click.IntRange(min=1), default=183, show_default=True)
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default="2018-04-01",
    show_default=True,
    help="First day, YYYY-MM-DD.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--drift",
    "drifts",
    type=click.Choice(list(SCENARIOS)),
    multiple=True,
    help="Drift scenario from --drift-start on (repeatable): "
    + "; ".join(f"{k}: {v}" for k, v in SCENARIOS.items())
    + ".",
)
@click.option(
    "--drift-start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First drifted day, YYYY-MM-DD (required with --drift).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the statistics as JSON.",
)
def simulate(
    out: Path,
    customers: int,
    terminals: int,
    days: int,
    start: datetime,
    seed: int,
    drifts: tuple[str, ...],
    drift_start: datetime | None,
    json_out: Path | None,
) -> None:
    """Simulate card transactions with the handbook's generative process and fraud scenarios."""
    if drifts and drift_start is None:
        raise click.UsageError("--drift needs --drift-start (the first drifted day)")
    if drift_start is not None and not drifts:
        raise click.UsageError("--drift-start without --drift: name a scenario")
    try:
        config = SimulationConfig(
            n_customers=customers,
            n_terminals=terminals,
            n_days=days,
            start_date=start.date(),
            seed=seed,
            drifts=tuple(Drift(d, drift_start.date()) for d in drifts if drift_start),
        )
    except VigilError as e:
        raise click.UsageError(str(e)) from e
    t0 = time.perf_counter()
    with tqdm(total=3 + bool(drifts) + days, desc="simulate", unit="step", leave=True) as bar:

        def stage(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        sim = run_simulation(config, progress=stage)
        bar.set_postfix_str("writing days")
        write_daily(sim.transactions, out, config.start_date, days, progress=bar.update)
    elapsed = time.perf_counter() - t0
    stats = sim.statistics() | {"seconds": round(elapsed, 2), "out": str(out)}
    click.echo(_summary(stats, config))
    if json_out:
        json_out.write_text(json.dumps(stats, indent=2, default=str) + "\n")


def _summary(stats: dict, config: SimulationConfig) -> str:
    scenarios = stats["scenarios"]
    lines = [
        f"wrote {stats['transactions']:,} transactions to {stats['out']} in {stats['seconds']} s",
        f"  days {config.n_days} from {config.start_date}, customers {config.n_customers:,}, "
        f"terminals {config.n_terminals:,}, seed {config.seed}",
        f"  frauds {stats['frauds']:,} ({stats['fraud_rate']:.2%}); by scenario "
        f"1: {scenarios[1]:,}  2: {scenarios[2]:,}  3: {scenarios[3]:,}"
        + (f"  4 (card testing): {scenarios[4]:,}" if 4 in scenarios else ""),
    ]
    for drift in config.drifts:
        lines.append(f"  drift {drift.scenario} from {drift.start}")
    if config.drifts:
        lines.append(f"  rows added by drift: {stats['added_by_drift']:,}")
    if not config.drifts and (
        config.n_customers, config.n_terminals, config.n_days, config.start_date
    ) == (
        5_000,
        10_000,
        183,
        date(2018, 4, 1),
    ):
        delta = stats["transactions"] / BOOK_TRANSACTIONS - 1
        lines.append(
            f"  handbook: {BOOK_TRANSACTIONS:,} transactions ({delta:+.2%} here), "
            f"{BOOK_FRAUDS:,} frauds ({BOOK_FRAUDS / BOOK_TRANSACTIONS:.2%}); by scenario "
            + "  ".join(f"{k}: {v:,}" for k, v in BOOK_SCENARIOS.items())
        )
    return "\n".join(lines)
