"""``vigil featurize`` and ``vigil materialize``."""

from __future__ import annotations

from pathlib import Path

import click

from feature_store.engines import (
    DEFAULT_DRIVER_MEMORY,
    DEFAULT_ENGINE,
    DEFAULT_MASTER,
    DEFAULT_PARTITIONS,
    ENGINES,
    SparkOptions,
)
from vigil_cli.cli import exit_without_teardown, settings_from


@click.command()
@click.option(
    "--transactions",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Raw transactions: a parquet/CSV file or a folder of them.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for features.parquet (one row per transaction).",
)
@click.option(
    "--store/--no-store",
    default=True,
    show_default=True,
    help="Also write the feature store's offline sources (under VIGIL_HOME).",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default=DEFAULT_ENGINE,
    show_default=True,
    help="What runs the feature SQL: DuckDB in this process, or Spark (PySpark, Java 17+).",
)
@click.option(
    "--master",
    default=DEFAULT_MASTER,
    show_default=True,
    help="Spark master (--engine spark): local[N], or a cluster's URL (spark://host:7077).",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=DEFAULT_PARTITIONS,
    show_default=True,
    help="Spark shuffle partitions of the window queries (--engine spark).",
)
@click.option(
    "--driver-memory",
    default=DEFAULT_DRIVER_MEMORY,
    show_default=True,
    help="Spark driver heap (--engine spark; local mode runs the executors in it too).",
)
@click.pass_context
def featurize(
    ctx: click.Context,
    transactions: Path,
    out: Path,
    store: bool,
    engine: str,
    master: str,
    partitions: int,
    driver_memory: str,
) -> None:
    """Compute the fraud features of every transaction (batch: on this machine, or Spark)."""
    from vigil.process import tune_for_batch

    tune_for_batch()
    from feature_store.jobs import FEATURIZE_COLUMNS
    from feature_store.jobs import featurize as run_featurize
    from vigil.data.ingest import read_transactions

    config = None
    if store:  # the store's configuration imports Feast (seconds): only when writing to it
        from feature_store.config import StoreConfig

        config = StoreConfig.from_settings(settings_from(ctx))
    spark = (
        SparkOptions(master=master, partitions=partitions, driver_memory=driver_memory)
        if engine == "spark"
        else None
    )
    raw = read_transactions(transactions, columns=FEATURIZE_COLUMNS)
    _, result = run_featurize(raw.frame, out, store=config, engine=engine, spark=spark)
    click.echo(
        f"wrote {result.rows:,} rows x {len(result.features)} features to {result.path} "
        f"in {result.seconds:.1f} s on {engine} ({result.first} .. {result.last})"
    )
    if result.store_sources:
        click.echo(f"offline store sources: {result.store_sources.transaction_features.parent}")
    exit_without_teardown()


@click.command()
@click.option("--pushgateway", default=None,
              help="Push the materialization's freshness here (default: "
                   "monitoring.pushgateway_url; none: no push).")
@click.pass_context
def materialize(ctx: click.Context, pushgateway: str | None) -> None:
    """Load the latest batch snapshots into the online store (Redis, else SQLite)."""
    from feature_store.config import StoreConfig
    from feature_store.jobs import materialize as run_materialize

    settings = settings_from(ctx)
    result = run_materialize(StoreConfig.from_settings(settings))
    click.echo(
        f"materialized {result.customers:,} customers and {result.terminals:,} terminals into "
        f"{result.backend} in {result.seconds:.2f} s ({result.rows_per_second:,.0f} rows/s)"
    )
    url = pushgateway or settings.monitoring.pushgateway_url
    if url:
        from monitoring.freshness import push_materialization

        push_materialization(url, settings.features.project, result.until)
        click.echo(f"pushed vigil_feature_materialized_until_timestamp_seconds to {url}")
