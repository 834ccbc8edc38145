"""``vigil retrain-webhook fraud --port 9095 --transactions PATH``: an Alertmanager webhook that
retrains on drift and live-performance alerts (:mod:`monitoring.retrain`).

Each retrain runs ``vigil run fraud --local`` (kfp.local, the same code path as by hand) or, with
a KFP host (``--host`` or ``pipelines.kfp_host``), ``vigil run fraud --host`` (a KFP run); the
pipeline's gate decides whether a challenger is registered (and rolled out with
``--rollout-target``).
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import click

from pipelines.params import DEFAULTS
from rollout import NO_ROLLOUT, TARGETS
from vigil_cli.cli import settings_from

log = logging.getLogger(__name__)


@click.group("retrain-webhook")
def retrain_webhook() -> None:
    """Retrain when Alertmanager posts drift or live-performance alerts."""


@retrain_webhook.command()
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 in a pod).")
@click.option("--port", type=click.IntRange(0, 65535), default=9095, show_default=True,
              help="Port (0: any free port, printed).")
@click.option("--transactions", metavar="PATH", required=True,
              help="Raw transactions to retrain on (a folder of daily files: the newest days).")
@click.option("--host", metavar="URL", default=None,
              help="Start KFP runs there (default: pipelines.kfp_host; none: kfp.local here).")
@click.option("--rollout-target", type=click.Choice([NO_ROLLOUT, *TARGETS]),
              default=DEFAULTS.rollout_target, show_default=True,
              help="Roll a registered challenger out there (canary decided by Prometheus).")
@click.option("--alert", "alertnames", multiple=True, metavar="NAME",
              help="Alert names that start a retrain (default: VigilDriftDetected, "
              "VigilLiveAPBelowEvaluated).")
@click.option("--run-arg", "run_args", multiple=True, metavar="ARG",
              help="Extra argument for `vigil run fraud` (repeat: --run-arg=--train-days "
              "--run-arg=14).")
@click.pass_context
def fraud(ctx: click.Context, bind: str, port: int, transactions: str, host: str | None,
          rollout_target: str, alertnames: tuple[str, ...], run_args: tuple[str, ...]) -> None:
    """Serve the webhook (POST /alerts; GET /metrics, /status) until interrupted."""
    from monitoring.retrain import RETRAIN_ALERTS, CommandRetrain, Retrainer, WebhookServer

    settings = settings_from(ctx)
    host = host or settings.pipelines.kfp_host
    config = ctx.find_root().obj.get("config_path")
    argv = [sys.executable, "-m", "vigil_cli", *(["--config", config] if config else []),
            "run", "fraud"]
    if host is None:
        path = Path(transactions)
        if not path.exists():
            raise click.BadParameter(f"{transactions} does not exist",
                                     param_hint="--transactions")
        argv += ["--local", "--transactions", str(path.resolve())]
    else:
        argv += ["--host", host, "--transactions", transactions,
                 "--experiment", settings.pipelines.experiment]
    argv += ["--rollout-target", rollout_target, *run_args]
    out_dir = (settings.home / "retrain").resolve()
    action = CommandRetrain(argv, out_dir, summary_flag=None if host else "--json")
    retrainer = Retrainer(action, model_name=settings.registry.model_name,
                          alertnames=frozenset(alertnames) or RETRAIN_ALERTS)
    server = WebhookServer(retrainer, bind, port)
    where = f"KFP at {host}" if host else "kfp.local on this machine"
    click.echo(f"retrain webhook on {server.url}/alerts: {', '.join(sorted(retrainer.alertnames))}"
               f" start `vigil run fraud` ({where}); runs logged in {out_dir}", err=True)
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (a pod stopping) ends like Ctrl-C

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if retrainer.busy:
            click.echo("waiting for the running retrain to finish ...", err=True)
            retrainer.wait()
