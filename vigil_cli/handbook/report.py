"""The report: Vigil's figures beside the published ones, as a fixed-width text table."""

from __future__ import annotations

from datetime import timedelta

from vigil.evaluation.metrics import METRIC_LABELS, METRICS
from vigil_cli.handbook.published import PUBLISHED, best_published
from vigil_cli.handbook.running import BenchmarkResult


def _pm(mean: float, std: float, folds: int) -> str:
    return f"{mean:.3f}" if folds == 1 else f"{mean:.3f} ± {std:.3f}"


def format_table(result: BenchmarkResult) -> str:
    """Vigil's figures beside the published ones, as a fixed-width text table."""
    protocol = result.protocol
    n_test = len(result.plan.test_folds)
    s = result.data.transactions
    head = (
        f"Handbook benchmark, {'chapter 3 (one split)' if protocol == 'ch3' else 'chapter 5'}"
        + (f" ({n_test} prequential test folds: mean ± std)" if protocol == "ch5" else "")
    )
    selection = result.vigil.selection
    chosen_by = "per metric" if selection == "per-metric" else f"by {METRIC_LABELS[selection]}"
    test_days = ", ".join(
        f"{f.test_start} .. {f.test_end - timedelta(days=1)}" for f in result.plan.test_folds
    )
    lines = [
        head,
        f"data: {s.rows:,} transactions, {s.frauds:,} frauds ({s.fraud_rate:.2%}), "
        f"{s.first_day} .. {s.last_day}; anchor {result.plan.anchor} ({result.plan.dates_source})",
        f"test days: {test_days}",
        f"hyperparameters chosen on {len(result.plan.validation_folds)} validation folds, "
        f"{chosen_by}",
        "",
    ]
    width = max(44, *(len(m.name) + 2 for m in result.models))
    col = 17
    header = "model".ljust(width) + "".join(METRIC_LABELS[m].ljust(col) for m in METRICS)
    lines += [header, "-" * len(header)]
    for model in result.models:
        lines.append(
            model.name.ljust(width)
            + "".join(_pm(model.mean(m), model.std(m), n_test).ljust(col) for m in METRICS)
        )
    lines.append("published (the book's data):")
    for p in PUBLISHED[protocol]:
        lines.append(("  " + p.model).ljust(width) + "".join(p.text(m).ljust(col) for m in METRICS))
    best = best_published(protocol)
    lines.append(
        "best published".ljust(width) + "".join(f"{best[m]:.3f}".ljust(col) for m in METRICS)
    )
    targets = result.targets()
    lines.append(
        "Vigil beats it".ljust(width)
        + "".join(("yes" if targets[m]["met"] else "NO").ljust(col) for m in METRICS)
    )
    lines.append("")
    lines.append(
        "CP@100 ceiling on this data (fraudulent cards per test day / 100): "
        + ", ".join(f"{v:.3f}" for v in result.cp_ceiling)
    )
    for model in result.models:
        names = {m: model.test[m].candidate.name for m in METRICS}
        if len(set(names.values())) == 1:
            lines.append(f"{model.name}: {next(iter(names.values()))}")
        else:
            lines.append(f"{model.name}:")
            lines += [f"  {METRIC_LABELS[m]}: {names[m]}" for m in METRICS]
    lines.append(f"{result.seconds:.0f} s (features {result.data.feature_seconds:.0f} s extra)")
    return "\n".join(line.rstrip() for line in lines)
