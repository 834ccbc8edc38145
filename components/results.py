"""The small results steps hand to each other and to whoever ran the pipeline, as JSON.

KFP passes them as string parameters; :func:`to_json` / ``from_json`` are the only
(de)serialisation, so fields are read by name everywhere.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import date
from typing import Any, Final, Literal

from components.windows import SPLITS, EvaluationWindows
from vigil.data.summary import TransactionSummary
from vigil.errors import VigilError

#: Where the decision sends a candidate: an alias, or nowhere.
REJECTED: Final = "rejected"
Decision = Literal["champion", "challenger", "rejected"]


def to_json(result: Any) -> str:
    return json.dumps(result.to_dict(), sort_keys=True)


def _loads(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise VigilError(f"{what} is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise VigilError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


@dataclasses.dataclass(frozen=True)
class Featurization:
    """The featurize step's result: what it read, how it split the data into the evaluation
    windows, and the feature service the dataset's features come from."""

    source: str
    transactions: TransactionSummary
    windows: EvaluationWindows
    #: Rows and frauds of each split in the dataset (``train``, ``valid``, ``delay``, ``test``).
    split_rows: Mapping[str, int]
    split_frauds: Mapping[str, int]
    feature_service: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "transactions": self.transactions.to_dict(),
            "windows": self.windows.to_dict(),
            "split_rows": dict(self.split_rows),
            "split_frauds": dict(self.split_frauds),
            "feature_service": self.feature_service,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Featurization:
        return cls(
            source=str(data["source"]),
            transactions=TransactionSummary.from_dict(data["transactions"]),
            windows=EvaluationWindows.from_dict(data["windows"]),
            split_rows={k: int(data["split_rows"].get(k, 0)) for k in SPLITS},
            split_frauds={k: int(data["split_frauds"].get(k, 0)) for k in SPLITS},
            feature_service=str(data["feature_service"]),
        )

    @classmethod
    def from_json(cls, text: str) -> Featurization:
        return cls.from_dict(_loads(text, "featurization"))


@dataclasses.dataclass(frozen=True)
class ChampionScores:
    """The current champion, scored on the candidate's test rows."""

    version: int
    metrics: Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The evaluate step's result: metrics of the candidate and the champion, and the gate."""

    data: Featurization
    #: The candidate's: the handbook protocol's figures (``average_precision``, ...; the gate's)
    #: and the same over every test transaction (``all_transactions_*``; the live reference).
    metrics: Mapping[str, float]
    champion: ChampionScores | None
    comparison_metric: str
    quality_floor: float
    min_improvement: float
    decision: Decision
    reason: str
    threshold: float
    #: Test rows scored (after removing cards known to be compromised), their frauds, and the
    #: test rows removed as known compromised.
    test_rows: int
    test_frauds: int
    dropped_known_compromised: int
    #: Where the evaluation report (PNGs, metrics.json, report.html) was written.
    report_uri: str

    @property
    def registers(self) -> bool:
        return self.decision != REJECTED

    @property
    def train_range(self) -> tuple[date, date]:
        return self.data.windows.train_start, self.data.windows.train_end

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data.to_dict(),
            "metrics": dict(self.metrics),
            "champion": None if self.champion is None else {
                "version": self.champion.version, "metrics": dict(self.champion.metrics)
            },
            "comparison_metric": self.comparison_metric,
            "quality_floor": self.quality_floor,
            "min_improvement": self.min_improvement,
            "decision": self.decision,
            "reason": self.reason,
            "threshold": self.threshold,
            "test_rows": self.test_rows,
            "test_frauds": self.test_frauds,
            "dropped_known_compromised": self.dropped_known_compromised,
            "report_uri": self.report_uri,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        champion = data.get("champion")
        decision = str(data["decision"])
        if decision not in ("champion", "challenger", REJECTED):
            raise VigilError(f"evaluation: unknown decision {decision!r}")
        return cls(
            data=Featurization.from_dict(data["data"]),
            metrics={str(k): float(v) for k, v in data["metrics"].items()},
            champion=None if champion is None else ChampionScores(
                version=int(champion["version"]),
                metrics={str(k): float(v) for k, v in champion["metrics"].items()},
            ),
            comparison_metric=str(data["comparison_metric"]),
            quality_floor=float(data["quality_floor"]),
            min_improvement=float(data["min_improvement"]),
            decision=decision,  # type: ignore[arg-type]  # checked above
            reason=str(data["reason"]),
            threshold=float(data["threshold"]),
            test_rows=int(data["test_rows"]),
            test_frauds=int(data["test_frauds"]),
            dropped_known_compromised=int(data["dropped_known_compromised"]),
            report_uri=str(data["report_uri"]),
        )

    @classmethod
    def from_json(cls, text: str) -> Evaluation:
        return cls.from_dict(_loads(text, "evaluation"))


@dataclasses.dataclass(frozen=True)
class Registration:
    """The end of a run: the registered version and its alias, or why nothing was registered."""

    registered: bool
    model_name: str
    version: int | None
    alias: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Registration:
        version = data.get("version")
        alias = data.get("alias")
        return cls(
            registered=bool(data["registered"]),
            model_name=str(data["model_name"]),
            version=None if version is None else int(version),
            alias=None if alias is None else str(alias),
            reason=str(data["reason"]),
        )

    @classmethod
    def from_json(cls, text: str) -> Registration:
        return cls.from_dict(_loads(text, "registration"))


@dataclasses.dataclass(frozen=True)
class Deployment:
    """The deploy step's result: whether a rollout ran, and how it ended."""

    rolled_out: bool
    target: str
    version: int | None
    #: ``promoted`` or ``rolled_back`` when a rollout ran; None otherwise.
    phase: str | None
    rollout_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deployment:
        version = data.get("version")
        return cls(
            rolled_out=bool(data["rolled_out"]),
            target=str(data["target"]),
            version=None if version is None else int(version),
            phase=None if data.get("phase") is None else str(data["phase"]),
            rollout_id=None if data.get("rollout_id") is None else str(data["rollout_id"]),
            reason=str(data["reason"]),
        )

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        return cls.from_dict(_loads(text, "deployment"))
