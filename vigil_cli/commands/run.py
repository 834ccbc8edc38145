"""``vigil run fraud``: the training pipeline, locally (``kfp.local``) or on Kubeflow Pipelines.

* ``vigil run fraud --local --transactions PATH`` (or ``--simulate``) runs the pipeline function
  on this machine, prints each step's progress and ends with a summary. Exit code 1 when the
  validation gate rejects the data, 2 on any other error.
* ``vigil run fraud --host URL --transactions PATH`` submits the committed compiled pipeline
  (``pipelines/fraud_training.yaml``) to a KFP endpoint; PATH is as the cluster's steps see it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import click

from feature_store.engines import ENGINES
from pipelines.params import DEFAULTS, FraudTrainingParams
from rollout import NO_ROLLOUT, TARGETS
from vigil.evaluation.metrics import METRICS
from vigil_cli.cli import settings_from


@click.group()
def run() -> None:
    """Run a training pipeline locally (kfp.local) or on Kubeflow Pipelines."""


@run.command()
@click.option("--local", "local", is_flag=True, help="Run on this machine through kfp.local.")
@click.option("--host", metavar="URL", default=None,
              help="Submit the compiled pipeline to this Kubeflow Pipelines endpoint.")
@click.option("--transactions", metavar="PATH", default=None,
              help="Raw transactions: parquet/CSV file or folder of daily files.")
@click.option("--simulate", is_flag=True,
              help="--local only: simulate a small data set into VIGIL_HOME and use it.")
@click.option("--train-days", type=click.IntRange(min=2), default=DEFAULTS.train_days,
              show_default=True,
              help="Days of the training window (validation slice included).")
@click.option("--valid-days", type=click.IntRange(min=1), default=DEFAULTS.valid_days,
              show_default=True,
              help="Days at the end of the training window for early stopping and threshold.")
@click.option("--delay-days", type=click.IntRange(min=0), default=DEFAULTS.delay_days,
              show_default=True,
              help="Label delay: days between the training and the test window.")
@click.option("--test-days", type=click.IntRange(min=1), default=DEFAULTS.test_days,
              show_default=True,
              help="Days of the test window.")
@click.option("--test-end", default="", metavar="YYYY-MM-DD",
              help="Last test day (default: the last day in the data).")
@click.option("--metric", type=click.Choice(METRICS), default=DEFAULTS.comparison_metric,
              show_default=True,
              help="Metric compared with the champion on the same rows.")
@click.option("--quality-floor", type=float, default=DEFAULTS.quality_floor,
              show_default=True,
              help="Lowest value of --metric a model needs to be registered at all.")
@click.option("--min-improvement", type=click.FloatRange(min=0),
              default=DEFAULTS.min_improvement,
              show_default=True,
              help="How much a candidate must beat the champion by.")
@click.option("--lightgbm-params", default=DEFAULTS.lightgbm_params, metavar="JSON",
              help="LightGBM parameter overrides, a JSON object.")
@click.option("--rollout-target", type=click.Choice([NO_ROLLOUT, *TARGETS]),
              default=DEFAULTS.rollout_target, show_default=True,
              help="After registering a challenger, roll it out there (canary steps decided "
              "by Prometheus; the rollout.* settings); none: register only.")
@click.option("--feature-engine", type=click.Choice(ENGINES), default=DEFAULTS.feature_engine,
              show_default=True,
              help="What runs the featurize step's feature SQL: duckdb, or spark (PySpark).")
@click.option("--spark-master", default=DEFAULTS.spark_master, show_default=True,
              help="--feature-engine spark: local[N] in the step, or a cluster's master URL.")
@click.option("--pipeline-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--local: folder for the run's artifacts (default: VIGIL_HOME/pipeline_runs).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="--local: also write the summary as JSON.")
@click.option("--experiment", default="vigil", show_default=True,
              help="--host: KFP experiment of the run.")
@click.option("--run-name", default=None, help="--host: name of the KFP run.")
@click.option("--cluster-home", default="", metavar="PATH",
              help="--host: vigil_home as the cluster's steps see it (default: their VIGIL_HOME).")
@click.option("--cluster-config", default="", metavar="PATH",
              help="--host: Vigil settings file as the steps see it (default: $VIGIL_CONFIG).")
@click.pass_context
def fraud(
    ctx: click.Context,
    local: bool,
    host: str | None,
    transactions: str | None,
    simulate: bool,
    train_days: int,
    valid_days: int,
    delay_days: int,
    test_days: int,
    test_end: str,
    metric: str,
    quality_floor: float,
    min_improvement: float,
    lightgbm_params: str,
    rollout_target: str,
    feature_engine: str,
    spark_master: str,
    pipeline_root: Path | None,
    json_out: Path | None,
    experiment: str,
    run_name: str | None,
    cluster_home: str,
    cluster_config: str,
) -> None:
    """Validate, featurize, train, evaluate against the champion and register a fraud model."""
    if local == (host is not None):
        raise click.UsageError("choose one of --local and --host URL")
    if simulate and transactions:
        raise click.UsageError("--transactions and --simulate exclude each other")
    if not simulate and not transactions:
        raise click.UsageError("give --transactions PATH" + (" or --simulate" if local else ""))
    if valid_days >= train_days:
        raise click.UsageError(f"--valid-days ({valid_days}) must be < --train-days ({train_days})")
    settings = settings_from(ctx)
    params = FraudTrainingParams(
        transactions=transactions or "",
        model_name=settings.registry.model_name,
        train_days=train_days,
        valid_days=valid_days,
        delay_days=delay_days,
        test_days=test_days,
        test_end=test_end,
        comparison_metric=metric,
        quality_floor=quality_floor,
        min_improvement=min_improvement,
        lightgbm_params=lightgbm_params,
        rollout_target=rollout_target,
        feature_engine=feature_engine,
        spark_master=spark_master,
    )

    if host is not None:
        from pipelines.remote import submission, submit

        if simulate:
            raise click.UsageError("--simulate is for --local runs")
        request = submission(
            host,
            dataclasses.replace(params, vigil_home=cluster_home, vigil_config=cluster_config),
            experiment=experiment,
            run_name=run_name,
        )
        click.echo(f"submitting {request.package} to {request.host} (experiment {experiment})",
                   err=True)
        submitted = submit(request)
        click.echo(f"run {submitted.run_id}: {submitted.url}")
        return

    from pipelines.local import DEMO_SIMULATION, run_local, simulate_demo_data

    if simulate:
        cfg = DEMO_SIMULATION
        click.echo(f"simulating {cfg.n_days} days, {cfg.n_customers:,} customers, "
                   f"{cfg.n_terminals:,} terminals ...", err=True)
        folder, stats = simulate_demo_data(settings)
        click.echo(f"  {stats['transactions']:,} transactions, {stats['frauds']:,} frauds "
                   f"into {folder}", err=True)
        params = dataclasses.replace(params, transactions=str(folder))
    elif Path(params.transactions).exists():
        params = dataclasses.replace(params, transactions=str(Path(params.transactions).resolve()))
    else:
        raise click.BadParameter(f"{params.transactions} does not exist",
                                 param_hint="--transactions")
    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    summary = run_local(
        params,
        settings=settings,
        pipeline_root=pipeline_root,
        log_stream=sys.stderr if verbose else None,
    )
    click.echo(summary.to_text())
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary.to_dict(), indent=2, default=str) + "\n")
