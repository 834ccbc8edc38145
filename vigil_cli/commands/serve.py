"""``vigil serve``: the model server of a registered model, one process, on 127.0.0.1 by default.

Every option overrides a setting of ``serving`` (or ``registry.model_name``); what is not given
comes from the settings (``--config`` file, ``VIGIL_SERVING__*`` variables, their defaults).
"""

from __future__ import annotations

from typing import Any

import click

from vigil.errors import ConfigError
from vigil_cli.cli import settings_from


@click.command()
@click.argument("model_name", required=False)
@click.option("--port", type=int, default=None, help="HTTP port (default: serving.port).")
@click.option("--host", default=None,
              help="Address to bind (default: serving.host; 0.0.0.0 in a pod).")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Registry version to serve (default: the champion).")
@click.option("--log-root", default=None,
              help="Inference log folder or object-storage URI (s3://..., gs://...); "
              "default: serving.log_root, else <home>/inference_log/<model>.")
@click.option("--max-future-skew", type=float, default=None,
              help="Seconds a TX_DATETIME may be ahead of the server clock "
              "(default: serving.max_future_skew_s).")
@click.option("--max-instances", type=int, default=None,
              help="Transactions per request (default: serving.max_instances).")
@click.option("--access-log/--no-access-log", default=None,
              help="Log one line per HTTP request (default: serving.access_log; the inference "
              "log records every scored transaction anyway).")
@click.pass_context
def serve(
    ctx: click.Context,
    model_name: str | None,
    port: int | None,
    host: str | None,
    version: int | None,
    log_root: str | None,
    max_future_skew: float | None,
    max_instances: int | None,
    access_log: bool | None,
) -> None:
    """Serve MODEL_NAME (default: registry.model_name of the settings) over HTTP: KServe V1
    and Open Inference Protocol, one process (scale out with replicas).

    Ready (GET /v2/health/ready) once the model is loaded and the online store answers.
    Set VIGIL_SERVING_TOKEN to require "Authorization: Bearer <token>" on every endpoint
    except the health probes.
    """
    from inference.server import serve as run
    from vigil.settings import with_overrides

    given: dict[str, Any] = {
        "port": port, "host": host, "log_root": log_root, "max_future_skew_s": max_future_skew,
        "max_instances": max_instances, "access_log": access_log,
    }
    sections: dict[str, dict[str, Any]] = {
        "serving": {k: v for k, v in given.items() if v is not None}
    }
    if model_name is not None:
        sections["registry"] = {"model_name": model_name}
    try:
        settings = with_overrides(settings_from(ctx), "command line", **sections)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    run(settings, version=version)
