"""The book's published figures: the anchor Vigil's results are compared with."""

from __future__ import annotations

import dataclasses
from typing import Any, Final, cast

from vigil.evaluation.metrics import METRICS, MetricName
from vigil_cli.handbook.protocol import ProtocolName


@dataclasses.dataclass(frozen=True)
class Published:
    """A figure from the book: (low, high) per metric, equal when the book gives one value."""

    model: str
    auc_roc: tuple[float, float]
    average_precision: tuple[float, float]
    card_precision_at_100: tuple[float, float]

    def best(self, metric: MetricName) -> float:
        return cast(tuple[float, float], getattr(self, metric))[1]

    def text(self, metric: MetricName) -> str:
        low, high = cast(tuple[float, float], getattr(self, metric))
        return f"{high:.3f}" if low == high else f"{low:.3f}–{high:.3f}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **{m: list(getattr(self, m)) for m in METRICS}}


def _one(v: float) -> tuple[float, float]:
    return (v, v)


#: The book's results on its simulated data (docs/DESIGN.md, "the anchor to beat").
PUBLISHED: Final[dict[ProtocolName, tuple[Published, ...]]] = {
    "ch3": (
        Published("Logistic regression", _one(0.871), _one(0.606), _one(0.291)),
        Published("Random forest", _one(0.867), _one(0.658), _one(0.287)),
        Published("XGBoost", _one(0.862), _one(0.639), _one(0.273)),
    ),
    "ch5": (
        Published("XGBoost", (0.869, 0.872), (0.687, 0.694), _one(0.303)),
        Published("Random forest", _one(0.870), _one(0.678), _one(0.299)),
        Published("Balanced bagging", _one(0.879), _one(0.680), _one(0.305)),
    ),
}


def best_published(protocol: ProtocolName) -> dict[MetricName, float]:
    """The best published figure of each metric (the target to beat)."""
    return {m: max(p.best(m) for p in PUBLISHED[protocol]) for m in METRICS}
