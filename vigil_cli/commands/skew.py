"""``vigil skew``: served features against the batch path's, on a sample of the inference log."""

from __future__ import annotations

import sys

import click

from vigil_cli.cli import settings_from


@click.command()
@click.argument("model_name", required=False)
@click.option("--transactions", required=True, type=click.Path(exists=True),
              help="Raw transactions covering the served ones and their history (file or "
                   "folder).")
@click.option("--current", "window", default=None,
              help="Window of the inference log as for `vigil drift` (default: all of it).")
@click.option("--sample", type=click.IntRange(min=1), default=1_000, show_default=True)
@click.option("--log", "log_root", default=None,
              help="Inference log root (default: serving.log_root, else "
                   "<home>/inference_log/<model>).")
@click.option("--pushgateway", default=None,
              help="Pushgateway URL (default: monitoring.pushgateway_url; none: no push).")
@click.pass_context
def skew(ctx: click.Context, model_name: str | None, transactions: str, window: str | None,
         sample: int, log_root: str | None, pushgateway: str | None) -> None:
    """Training/serving skew of MODEL_NAME: a sample of served transactions recomputed by the
    batch path; exit code 1 when any feature differs (0 mismatches expected)."""
    from monitoring.skew import check_skew, push

    settings = settings_from(ctx)
    name = model_name or settings.registry.model_name
    if log_root is None:
        log_root = settings.inference_log_root if name == settings.registry.model_name else str(
            settings.home.resolve() / "inference_log" / name)
    result = check_skew(log_root, transactions, model_name=name, window=window, sample=sample)
    click.echo(f"{name}: {result.compared:,} served transactions recomputed by the batch path "
               f"in {result.seconds:.1f} s; {result.mismatched:,} differ "
               f"(rate {result.mismatch_rate:.4f}); {result.missing:,} not in the raw data")
    for feature, n in result.feature_mismatches.items():
        if n:
            click.echo(f"  {feature}: {n:,} differ")
    url = pushgateway or settings.monitoring.pushgateway_url
    if url:
        push(url, result)
        click.echo(f"pushed vigil_skew_* to {url}")
    if result.mismatched:
        sys.exit(1)
