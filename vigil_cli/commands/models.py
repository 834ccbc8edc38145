"""``vigil models``: list registered model versions, promote one to champion, roll back."""

from __future__ import annotations

from collections.abc import Sequence

import click

from vigil.evaluation.metrics import METRIC_LABELS, METRICS
from vigil.registry import ModelCard, Registry
from vigil_cli.cli import settings_from


def _registry(ctx: click.Context) -> Registry:
    return Registry.from_settings(settings_from(ctx))


def _name(ctx: click.Context, name: str | None) -> str:
    return name or str(settings_from(ctx).registry.model_name)


@click.group()
def models() -> None:
    """Registered models: versions, champion / challenger aliases, promotion and rollback."""


@models.command("list")
@click.argument("name", required=False)
@click.pass_context
def list_(ctx: click.Context, name: str | None) -> None:
    """List the versions of NAME (default: the configured model), newest first."""
    name = _name(ctx, name)
    cards = _registry(ctx).list_models(name)
    if not cards:
        click.echo(f"model {name} has no versions")
        return
    click.echo(format_table(cards))


@models.command()
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.pass_context
def promote(ctx: click.Context, name: str, version: int) -> None:
    """Make VERSION of NAME the champion (the previous champion is kept for rollback)."""
    card = _registry(ctx).promote(name, version)
    click.echo(f"{card.label} is the champion (sha256 {card.sha256[:12]})")


@models.command()
@click.argument("name")
@click.pass_context
def rollback(ctx: click.Context, name: str) -> None:
    """Put the previous champion of NAME back."""
    card = _registry(ctx).rollback(name)
    click.echo(f"rolled back: {card.label} is the champion again (sha256 {card.sha256[:12]})")




def format_table(cards: Sequence[ModelCard]) -> str:
    metrics = [METRIC_LABELS[m] for m in METRICS]
    header = ["VERSION", "ALIASES", "SHA256", "THRESHOLD", *metrics, "DATA", "CREATED"]
    rows = [
        [
            str(c.version),
            ",".join(c.aliases) or "-",
            c.sha256[:12],
            f"{c.threshold:.4g}",
            *(f"{c.metrics[m]:.3f}" if m in c.metrics else "-" for m in METRICS),
            f"{c.train_start}..{c.train_end}",
            c.created.strftime("%Y-%m-%d %H:%M:%SZ"),
        ]
        for c in cards
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
