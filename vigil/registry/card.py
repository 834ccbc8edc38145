"""The model card: what the registry records about a model version, and its tag mapping.

A registered version's tags *are* its card (serving trusts them): ``vigil.sha256`` (of
``model.txt``), ``vigil.format``, ``vigil.threshold``, ``vigil.feature_service``,
``vigil.feature_names``, ``vigil.train_start``/``vigil.train_end``, ``vigil.metrics``,
``vigil.git_commit``. :class:`CardDraft` is a card before registration (checked inputs, written
as tags and as ``model.json``); :func:`card_from_version` reads a :class:`ModelCard` back.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

import lightgbm
from mlflow.entities.model_registry import ModelVersion

from vigil.errors import RegistryError
from vigil.registry.lightgbm_flavor import MODEL_FILE, MODEL_FORMAT, sha256_hex

#: The card as JSON beside the model file, for tools that only see the files.
CARD_FILE: Final = "model.json"

TAG_SHA256: Final = "vigil.sha256"
TAG_FORMAT: Final = "vigil.format"
TAG_THRESHOLD: Final = "vigil.threshold"
TAG_FEATURE_SERVICE: Final = "vigil.feature_service"
TAG_FEATURE_NAMES: Final = "vigil.feature_names"
TAG_TRAIN_START: Final = "vigil.train_start"
TAG_TRAIN_END: Final = "vigil.train_end"
TAG_METRICS: Final = "vigil.metrics"
TAG_GIT_COMMIT: Final = "vigil.git_commit"
#: MLflow's own run tag for the source commit (shown by its UI).
MLFLOW_GIT_COMMIT_TAG: Final = "mlflow.source.git.commit"
#: Tags without which a version was not registered by Vigil.
_REQUIRED_TAGS: Final = (TAG_SHA256, TAG_THRESHOLD, TAG_FEATURE_SERVICE, TAG_FEATURE_NAMES,
                         TAG_TRAIN_START, TAG_TRAIN_END, TAG_METRICS)

UNKNOWN_COMMIT: Final = "unknown"
_GIT_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True)
class ModelCard:
    """What the registry knows about one model version; serving trusts these fields."""

    name: str
    version: int
    sha256: str
    threshold: float
    feature_service: str
    #: Model input columns, in the booster's order.
    feature_names: tuple[str, ...]
    #: First and last day of the training data.
    train_start: date
    train_end: date
    metrics: Mapping[str, float] = field(hash=False)
    git_commit: str
    run_id: str
    #: Artifact URI of the folder holding ``model.txt`` and ``model.json``.
    source: str
    aliases: tuple[str, ...]
    created: datetime

    @property
    def label(self) -> str:
        return f"{self.name} version {self.version}"


@dataclass(frozen=True)
class CardDraft:
    """The card of a model about to be registered: all but what the registry assigns (version,
    run, source, aliases, creation time). Build it with :func:`draft_card`."""

    name: str
    sha256: str
    threshold: float
    feature_service: str
    feature_names: tuple[str, ...]
    train_start: date
    train_end: date
    metrics: Mapping[str, float] = field(hash=False)
    #: Training parameters as MLflow records them (text).
    params: Mapping[str, str] = field(hash=False)
    git_commit: str

    def version_tags(self) -> dict[str, str]:
        """The model version's tags: the whole card."""
        return {
            TAG_SHA256: self.sha256,
            TAG_FORMAT: MODEL_FORMAT,
            TAG_THRESHOLD: repr(float(self.threshold)),
            TAG_FEATURE_SERVICE: self.feature_service,
            TAG_FEATURE_NAMES: json.dumps(list(self.feature_names)),
            TAG_TRAIN_START: self.train_start.isoformat(),
            TAG_TRAIN_END: self.train_end.isoformat(),
            TAG_METRICS: json.dumps(dict(self.metrics), sort_keys=True),
            TAG_GIT_COMMIT: self.git_commit,
        }

    def run_tags(self) -> dict[str, str]:
        """The run's tags: the card minus the long values (run tags hold 8,000 characters)."""
        tags = self.version_tags()
        short = (TAG_SHA256, TAG_FORMAT, TAG_THRESHOLD, TAG_FEATURE_SERVICE, TAG_TRAIN_START,
                 TAG_TRAIN_END, TAG_GIT_COMMIT)
        return {**{tag: tags[tag] for tag in short}, MLFLOW_GIT_COMMIT_TAG: self.git_commit}

    def to_json(self) -> str:
        """``model.json``: the card beside the model file."""
        card = {
            "name": self.name,
            "format": MODEL_FORMAT,
            "file": MODEL_FILE,
            "sha256": self.sha256,
            "threshold": float(self.threshold),
            "feature_service": self.feature_service,
            "feature_names": list(self.feature_names),
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "metrics": dict(self.metrics),
            "params": dict(self.params),
            "git_commit": self.git_commit,
        }
        return json.dumps(card, indent=2) + "\n"


def draft_card(
    name: str,
    text: str,
    booster: lightgbm.Booster,
    *,
    threshold: float,
    feature_service: str,
    data_range: tuple[date, date],
    metrics: Mapping[str, float],
    params: Mapping[str, object] | None = None,
    feature_names: Sequence[str] | None = None,
    git_commit: str | None = None,
) -> CardDraft:
    """The card of ``booster`` (whose text format is ``text``), its inputs checked
    (:class:`ValueError` naming the bad one). ``feature_names`` defaults to the booster's and
    must equal them when given; ``git_commit`` to :func:`detect_git_commit`."""
    names = tuple(booster.feature_name())
    if feature_names is not None and tuple(feature_names) != names:
        raise ValueError(
            f"feature_names {list(feature_names)} differ from the booster's {list(names)}"
        )
    if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    if not feature_service:
        raise ValueError("feature_service must not be empty")
    start, end = (_as_date(d) for d in data_range)
    if start > end:
        raise ValueError(f"data range starts after it ends: {start} > {end}")
    return CardDraft(
        name=name,
        sha256=sha256_hex(text.encode("utf-8")),
        threshold=float(threshold),
        feature_service=feature_service,
        feature_names=names,
        train_start=start,
        train_end=end,
        metrics={str(k): float(v) for k, v in metrics.items()},
        params={str(k): str(v) for k, v in (params or {}).items()},
        git_commit=git_commit or detect_git_commit(),
    )


def card_from_version(mv: ModelVersion, aliases: tuple[str, ...]) -> ModelCard:
    """The card of a registered version, read from its tags (:class:`RegistryError` when they
    are missing or malformed)."""
    tags = mv.tags
    label = f"{mv.name} version {mv.version}"
    missing = [t for t in _REQUIRED_TAGS if t not in tags]
    if missing:
        raise RegistryError(f"{label} was not registered by Vigil: tags {missing} are missing")
    if tags.get(TAG_FORMAT, MODEL_FORMAT) != MODEL_FORMAT:
        raise RegistryError(f"{label} has format {tags[TAG_FORMAT]!r}, expected {MODEL_FORMAT!r}")
    try:
        threshold = float(tags[TAG_THRESHOLD])
        feature_names = json.loads(tags[TAG_FEATURE_NAMES])
        metrics = json.loads(tags[TAG_METRICS])
        start = date.fromisoformat(tags[TAG_TRAIN_START])
        end = date.fromisoformat(tags[TAG_TRAIN_END])
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise RegistryError(f"{label} has a malformed card tag: {e}") from e
    if not isinstance(feature_names, list) or not all(isinstance(n, str) for n in feature_names):
        raise RegistryError(f"{label}: tag {TAG_FEATURE_NAMES} must be a list of names")
    if not isinstance(metrics, dict):
        raise RegistryError(f"{label}: tag {TAG_METRICS} must be a mapping")
    return ModelCard(
        name=mv.name,
        version=int(mv.version),
        sha256=tags[TAG_SHA256],
        threshold=threshold,
        feature_service=tags[TAG_FEATURE_SERVICE],
        feature_names=tuple(feature_names),
        train_start=start,
        train_end=end,
        metrics={str(k): float(v) for k, v in metrics.items()},
        git_commit=tags.get(TAG_GIT_COMMIT, UNKNOWN_COMMIT),
        run_id=mv.run_id or "",
        source=mv.source or "",
        aliases=aliases,
        created=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
    )


def detect_git_commit(directory: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the Vigil source tree, or ``"unknown"`` outside a checkout."""
    cwd = directory or Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN_COMMIT
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and _GIT_SHA.match(commit) else UNKNOWN_COMMIT


def _as_date(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value
