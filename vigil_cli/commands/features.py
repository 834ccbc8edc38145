"""``vigil featurize`` and ``vigil materialize``."""

from __future__ import annotations

from pathlib import Path

import click

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
@click.pass_context
def featurize(ctx: click.Context, transactions: Path, out: Path, store: bool) -> None:
    """Compute the fraud features of every transaction (batch, DuckDB)."""
    from vigil.process import tune_for_batch

    tune_for_batch()
    from feature_store.jobs import FEATURIZE_COLUMNS
    from feature_store.jobs import featurize as run_featurize
    from vigil.data.ingest import read_transactions

    config = None
    if store:  # the store's configuration imports Feast (seconds): only when writing to it
        from feature_store.config import StoreConfig

        config = StoreConfig.from_settings(settings_from(ctx))
    raw = read_transactions(transactions, columns=FEATURIZE_COLUMNS)
    _, result = run_featurize(raw.frame, out, store=config)
    click.echo(
        f"wrote {result.rows:,} rows x {len(result.features)} features to {result.path} "
        f"in {result.seconds:.1f} s ({result.first} .. {result.last})"
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
