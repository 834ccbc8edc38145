"""``vigil schedule fraud --cron "0 0 2 * * *"``: the training pipeline as a Kubeflow Pipelines
recurring run (the committed ``pipelines/fraud_training.yaml``), at most one run at a time and no
backfill of missed intervals. Without a cluster, the local equivalent is a cron line or systemd
timer running ``vigil run fraud --local`` (README, "Retraining")."""

from __future__ import annotations

import dataclasses

import click

from pipelines.params import DEFAULTS, FraudTrainingParams
from rollout import NO_ROLLOUT, TARGETS
from vigil_cli.cli import settings_from


@click.group()
def schedule() -> None:
    """Run a training pipeline on a schedule (a KFP recurring run)."""


@schedule.command()
@click.option("--cron", required=True, metavar="EXPR",
              help="6 fields, seconds first: second minute hour day-of-month month day-of-week "
              "(e.g. '0 0 2 * * *', 02:00 every day).")
@click.option("--host", metavar="URL", default=None,
              help="Kubeflow Pipelines endpoint (default: the pipelines.kfp_host setting).")
@click.option("--transactions", metavar="PATH", required=True,
              help="Raw transactions as the cluster's steps see them (a folder of daily files: "
              "each run trains on the newest days).")
@click.option("--rollout-target", type=click.Choice([NO_ROLLOUT, *TARGETS]),
              default=DEFAULTS.rollout_target, show_default=True,
              help="Roll a registered challenger out there.")
@click.option("--experiment", default=None,
              help="KFP experiment (default: the pipelines.experiment setting).")
@click.option("--name", "job_name", default="fraud-training-nightly", show_default=True,
              help="Name of the recurring run.")
@click.option("--cluster-home", default="", metavar="PATH",
              help="vigil_home as the cluster's steps see it (default: their VIGIL_HOME).")
@click.option("--cluster-config", default="", metavar="PATH",
              help="Vigil settings file as the steps see it (default: $VIGIL_CONFIG).")
@click.pass_context
def fraud(ctx: click.Context, cron: str, host: str | None, transactions: str,
          rollout_target: str, experiment: str | None, job_name: str, cluster_home: str,
          cluster_config: str) -> None:
    """Create a recurring run of the fraud training pipeline on Kubeflow Pipelines."""
    from pipelines.remote import SubmissionError, check_cron, schedule, submission

    settings = settings_from(ctx)
    host = host or settings.pipelines.kfp_host
    if host is None:
        raise click.UsageError("give --host URL or set pipelines.kfp_host")
    try:
        cron = check_cron(cron)
    except SubmissionError as e:
        raise click.BadParameter(str(e), param_hint="--cron") from e
    params = FraudTrainingParams(
        transactions=transactions,
        model_name=settings.registry.model_name,
        rollout_target=rollout_target,
    )
    request = submission(
        host,
        dataclasses.replace(params, vigil_home=cluster_home, vigil_config=cluster_config),
        experiment=experiment or settings.pipelines.experiment,
    )
    click.echo(f"scheduling {request.package} on {request.host} at '{cron}' "
               f"(experiment {request.experiment})", err=True)
    made = schedule(request, cron, job_name=job_name)
    click.echo(f"recurring run {made.recurring_run_id} ({made.cron}, max 1 at a time, "
               f"no catch-up): {made.url}")
