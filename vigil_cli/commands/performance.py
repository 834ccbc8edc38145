"""``vigil performance``: live AUC, AP, CP@100 and decision cost from labels that arrived."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vigil_cli.cli import settings_from

NOT_ENOUGH_LABELS_EXIT = 3


@click.command()
@click.argument("model_name", required=False)
@click.option("--labels", required=True, type=click.Path(exists=True),
              help="Labels that arrived: parquet/CSV file or folder with TRANSACTION_ID and "
                   "TX_FRAUD (raw transaction files work).")
@click.option("--version", "versions", type=click.IntRange(min=1), multiple=True,
              help="Model versions to measure (repeatable; default: every version in the log).")
@click.option("--log", "log_root", default=None,
              help="Inference log root (default: serving.log_root, else "
                   "<home>/inference_log/<model>).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Pictures and JSON (default: monitoring.live_out_dir, else "
                   "<home>/performance).")
@click.option("--pushgateway", default=None,
              help="Pushgateway URL (default: monitoring.pushgateway_url; none: no push).")
@click.pass_context
def performance(ctx: click.Context, model_name: str | None, labels: str,
                versions: tuple[int, ...], log_root: str | None, out: Path | None,
                pushgateway: str | None) -> None:
    """Live performance of MODEL_NAME (default: the configured model) on its served
    transactions whose labels arrived, next to its evaluated figures (over every transaction of
    its test window, as live traffic counts). Exit code 3: not enough labels."""
    from monitoring.performance import NotEnoughLabels, run_job
    from vigil.evaluation.metrics import METRIC_LABELS
    from vigil.registry import Registry

    settings = settings_from(ctx)
    name = model_name or settings.registry.model_name
    if log_root is None:
        log_root = settings.inference_log_root if name == settings.registry.model_name else str(
            settings.home.resolve() / "inference_log" / name)
    mon = settings.monitoring
    url = pushgateway or mon.pushgateway_url
    try:
        run = run_job(model_name=name, log_root=log_root, labels=labels,
                      registry=Registry.from_settings(settings), versions=versions or None,
                      alert_cost=mon.alert_cost, min_labelled=mon.live_min_labelled,
                      out_root=out or settings.live_out_dir, pushgateway_url=url)
    except NotEnoughLabels as e:
        click.echo(str(e), err=True)
        sys.exit(NOT_ENOUGH_LABELS_EXIT)
    for p, png in zip(run.results, run.pngs, strict=True):
        ev, handbook = p.evaluated, p.evaluated_handbook
        click.echo(f"{name} version {p.model_version}: {p.transactions:,} labelled transactions "
                   f"({p.frauds:,} frauds) over {len(p.days)} days")
        for key, label in METRIC_LABELS.items():
            notes = ([f"evaluated {ev[key]:.3f}"] if key in ev else []) + (
                [f"handbook protocol {handbook[key]:.3f}"] if key in handbook else [])
            evaluated = f" ({'; '.join(notes)})" if notes else ""
            click.echo(f"  {label:<8} {getattr(p, key):.3f}{evaluated}")
        if not ev:
            click.echo("  no evaluated figures over its whole test window on its card "
                       "(all_transactions_*): nothing to compare live performance with")
        click.echo(f"  decision cost {p.decision_cost:,.2f} "
                   f"({p.decision_cost_per_transaction:.3f} per transaction, alert cost "
                   f"{mon.alert_cost:g})")
        click.echo(f"  picture: {png}")
    for reason in run.skipped:
        click.echo(f"skipped: {reason}", err=True)
    if run.pushed_to:
        click.echo(f"pushed vigil_live_* to {run.pushed_to}")
