"""``vigil serve``: the KServe model server of a registered model, on 127.0.0.1 by default."""

from __future__ import annotations

import click

from vigil_cli.cli import settings_from


@click.command()
@click.argument("model_name", default="fraud")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="HTTP port (default: serving.port of the settings, 8080).")
@click.option("--host", default=None,
              help="Address to bind (default: serving.host of the settings, 127.0.0.1).")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Registry version to serve (default: the champion).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker processes sharing the port (default: serving.workers, 1).")
@click.option("--log-root", default=None,
              help="Inference log folder or object-storage URI (s3://..., gs://...); "
              "default: <home>/inference_log/<model>.")
@click.option("--max-future-skew", type=click.FloatRange(min=0), default=300.0,
              show_default=True, help="Seconds a TX_DATETIME may be ahead of the server clock.")
@click.option("--max-instances", type=click.IntRange(1, 100_000), default=1_000,
              show_default=True, help="Transactions per request.")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log one line per HTTP request (the inference log records every "
              "scored transaction anyway).")
@click.pass_context
def serve(
    ctx: click.Context,
    model_name: str,
    port: int | None,
    host: str | None,
    version: int | None,
    workers: int | None,
    log_root: str | None,
    max_future_skew: float,
    max_instances: int,
    access_log: bool,
) -> None:
    """Serve MODEL_NAME (default: fraud) over HTTP: KServe V1 and Open Inference Protocol.

    Ready (GET /v2/health/ready) once the model is loaded and the online store answers.
    Set VIGIL_SERVING_TOKEN to require "Authorization: Bearer <token>" on every endpoint
    except the health probes.
    """
    from inference.server import serve as run

    run(
        settings_from(ctx),
        model_name=model_name,
        version=version,
        host=host,
        port=port,
        workers=workers,
        log_root=log_root,
        max_future_skew_s=max_future_skew,
        max_instances=max_instances,
        access_log=access_log,
    )
