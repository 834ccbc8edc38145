"""``vigil drift``: served traffic against the served model's training set (Evidently), the
report written and the figures pushed to Prometheus."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vigil_cli.cli import settings_from

#: Exit code of a run without enough rows to compare (nothing was compared).
NOT_ENOUGH_DATA_EXIT = 3


@click.command()
@click.argument("model_name", required=False)
@click.option("--current", "current_window", default=None,
              help="Window of the inference log: <n>d / <n>h (the last n days / hours up to the "
                   "newest logged transaction), YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD (transaction "
                   "time). Default: monitoring.drift_window (1d).")
@click.option("--reference", default=None,
              help="Parquet features of the served model's training set (file or folder; an "
                   "inference-log folder works too). Default: monitoring.drift_reference.")
@click.option("--reference-window", default=None,
              help="Rows of the reference to use: a window as for --current, or 'all'. Default: "
                   "the served version's training window from the registry.")
@click.option("--version", type=click.IntRange(min=1), default=None,
              help="Model version served (default: the champion).")
@click.option("--log", "log_root", default=None,
              help="Inference log root (default: serving.log_root, else "
                   "<home>/inference_log/<model>).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Reports folder (default: monitoring.drift_out_dir, else <home>/drift).")
@click.option("--pushgateway", default=None,
              help="Pushgateway URL (default: monitoring.pushgateway_url; none: no push).")
@click.pass_context
def drift(
    ctx: click.Context,
    model_name: str | None,
    current_window: str | None,
    reference: str | None,
    reference_window: str | None,
    version: int | None,
    log_root: str | None,
    out: Path | None,
    pushgateway: str | None,
) -> None:
    """Data drift of MODEL_NAME's served traffic (default: the configured model): per feature,
    of the score and of the decision rate. Exit code 3: not enough data (nothing compared)."""
    from monitoring.drift import DriftOptions, NotEnoughData, run_job
    from vigil.registry import Registry

    settings = settings_from(ctx)
    name = model_name or settings.registry.model_name
    mon = settings.monitoring
    reference = reference or mon.drift_reference
    if not reference:
        raise click.UsageError(
            "no reference: pass --reference (parquet features of the served model's training "
            "set) or set monitoring.drift_reference; the registry records a version's training "
            "window, not its rows"
        )
    if log_root is None:
        log_root = settings.inference_log_root if name == settings.registry.model_name else str(
            settings.home.resolve() / "inference_log" / name)
    options = DriftOptions(method=mon.drift_method, threshold=mon.drift_threshold,
                           drift_share=mon.drift_share, min_rows=mon.drift_min_rows,
                           key_gain_share=mon.drift_key_gain_share)
    url = pushgateway or mon.pushgateway_url
    try:
        run = run_job(
            model_name=name, log_root=log_root, reference=reference, options=options,
            out_root=out or settings.drift_out_dir,
            current_window=current_window or mon.drift_window,
            reference_window=reference_window, registry=Registry.from_settings(settings),
            version=version, pushgateway_url=url,
        )
    except NotEnoughData as e:
        click.echo(f"{e}{'; recorded on ' + url if url else ''}", err=True)
        sys.exit(NOT_ENOUGH_DATA_EXIT)
    r = run.result
    window = r.current_window.describe() if r.current_window else "all"
    click.echo(f"{name} version {r.model_version or '?'}: {r.current_rows:,} served rows "
               f"({window}) against {r.reference_rows:,} reference rows in {r.seconds:.1f} s")
    click.echo(f"drifted features: {r.drifted_features}/{len(r.features)} "
               f"(share {r.drifted_share:.2f}, data set drift at {r.drift_share:.2f}: "
               f"{'DETECTED' if r.dataset_drift else 'no'})")
    key = set(r.key_features)
    click.echo(f"key features ({mon.drift_key_gain_share:.0%} of the model's gain): "
               f"{', '.join(r.key_features) or 'none'}; "
               f"drifted: {', '.join(r.drifted_key_features()) or 'none'}")
    for f in r.features:
        mark = ("KEY " if f.column in key else "") + ("DRIFT" if f.detected else "ok")
        click.echo(f"  {f.column:<40} {f.score:8.4f}  {f.method} (threshold {f.threshold:g})"
                   f"  {mark}")
    for what, d in (("score", r.score), ("decision", r.decision)):
        click.echo(f"  {what:<40} {d.score:8.4f}  {d.method}  {'DRIFT' if d.detected else 'ok'}")
    click.echo(f"decision rate: {r.decision_rate_current:.4f} served, "
               f"{r.decision_rate_reference:.4f} reference")
    click.echo(f"report: {run.html}\njson:   {run.json}")
    if run.pushed_to:
        click.echo(f"pushed vigil_drift_* to {run.pushed_to}")
