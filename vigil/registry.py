"""The model registry: MLflow runs and registered models holding LightGBM text-format models.

Every registered version is one MLflow run plus one model version:

* the run (experiment ``<name>``) holds the training params, the metrics, tags for the decision
  threshold, feature service, training data range and git commit, and the artifacts
  ``model/model.txt`` (LightGBM's own text format — never a pickle), ``model/model.json`` (the
  card, for tools that only see the files) and any extra reports under ``reports/``;
* the model version's source is the run's ``model`` folder; its tags are the card that serving
  trusts: ``vigil.sha256`` (of ``model.txt``), ``vigil.threshold``, ``vigil.feature_service``,
  ``vigil.feature_names``, ``vigil.train_start``/``vigil.train_end``, ``vigil.metrics``,
  ``vigil.git_commit``.

Aliases ``champion`` and ``challenger`` name the serving and the candidate model. Promotions keep
the ordered list of earlier champions in the registered-model tag ``vigil.champion_history``, so
that :meth:`Registry.rollback` can put the previous champion back. Loading recomputes the sha256
of ``model.txt`` and refuses a model whose digest differs from the registry's.

The tracking URI is any MLflow tracking URI; with a database URI (SQLite by default) the client
writes artifacts itself, under ``<home>/mlartifacts``; with a tracking server the server decides.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import lightgbm
import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from vigil.errors import ModelIntegrityError, RegistryError

if TYPE_CHECKING:
    from vigil.settings import Settings

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
Alias = Literal["champion", "challenger"]

MODEL_DIR: Final = "model"
MODEL_FILE: Final = "model.txt"
CARD_FILE: Final = "model.json"
REPORTS_DIR: Final = "reports"
MODEL_FORMAT: Final = "lightgbm-text"

TAG_SHA256: Final = "vigil.sha256"
TAG_FORMAT: Final = "vigil.format"
TAG_THRESHOLD: Final = "vigil.threshold"
TAG_FEATURE_SERVICE: Final = "vigil.feature_service"
TAG_FEATURE_NAMES: Final = "vigil.feature_names"
TAG_TRAIN_START: Final = "vigil.train_start"
TAG_TRAIN_END: Final = "vigil.train_end"
TAG_METRICS: Final = "vigil.metrics"
TAG_GIT_COMMIT: Final = "vigil.git_commit"
TAG_CHAMPION_HISTORY: Final = "vigil.champion_history"
#: MLflow's own run tag for the source commit (shown by its UI).
MLFLOW_GIT_COMMIT_TAG: Final = "mlflow.source.git.commit"

#: Earlier champions remembered for rollback (the registered-model tag stays small).
MAX_CHAMPION_HISTORY: Final = 100
UNKNOWN_COMMIT: Final = "unknown"

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$")
_GIT_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_REMOTE_SCHEMES: Final = frozenset({"http", "https", "databricks", "databricks-uc", "uc"})
_MAX_PARAMS_PER_BATCH: Final = 100
_RESOURCE_DOES_NOT_EXIST: Final = "RESOURCE_DOES_NOT_EXIST"
_RESOURCE_ALREADY_EXISTS: Final = "RESOURCE_ALREADY_EXISTS"
_INVALID_PARAMETER_VALUE: Final = "INVALID_PARAMETER_VALUE"


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
class LoadedModel:
    """A booster whose bytes matched the registry's sha256, with its card."""

    booster: lightgbm.Booster = field(repr=False)
    card: ModelCard


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


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_artifact_root(tracking_uri: str, home: Path) -> Path | None:
    """Where the client writes artifacts: under ``home`` unless a tracking server decides."""
    scheme = urllib.parse.urlparse(tracking_uri).scheme.lower()
    return None if scheme in _REMOTE_SCHEMES else (home / "mlartifacts").resolve()


def _sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (None for other URIs and in-memory)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = urllib.parse.urlparse(tracking_uri).path[1:]
    return Path(path) if path and path != ":memory:" else None


def _error_code(e: MlflowException) -> str:
    return str(getattr(e, "error_code", ""))


class Registry:
    """Typed operations over one MLflow tracking/registry URI."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        artifact_root: Path | None = None,
        experiment: str | None = None,
    ) -> None:
        """``artifact_root``: artifact location of experiments this registry creates (None: the
        tracking backend's default). ``experiment``: experiment for registration runs (default:
        the model name)."""
        database = _sqlite_file(tracking_uri)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.experiment = experiment
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        uri = settings.tracking_uri
        return cls(uri, artifact_root=default_artifact_root(uri, settings.home))

    # ------------------------------------------------------------------ registration

    def register_model(
        self,
        model: lightgbm.Booster | Path | str,
        *,
        name: str,
        threshold: float,
        feature_service: str,
        data_range: tuple[date, date],
        metrics: Mapping[str, float],
        params: Mapping[str, object] | None = None,
        feature_names: Sequence[str] | None = None,
        artifacts: Sequence[Path] = (),
        alias: Alias | None = None,
        git_commit: str | None = None,
        run_name: str | None = None,
    ) -> ModelCard:
        """Record a trained model as a new version of ``name`` and return its card.

        ``model`` is a booster, a LightGBM text-format file (``Path``) or the text itself
        (``str``). ``feature_names`` defaults to the booster's and must equal them when given.
        ``artifacts`` (files or folders, e.g. evaluation PNG/JSON) go under ``reports/``.
        ``alias="champion"`` promotes the new version (remembering the previous champion).
        """
        _check_name(name)
        text = _model_text(model)
        booster = _parse_booster(text, what="the model to register", error=ValueError)
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
        for path in artifacts:
            if not path.exists():
                raise ValueError(f"artifact {path} does not exist")
        metric_values = {str(k): float(v) for k, v in metrics.items()}
        commit = git_commit or detect_git_commit()
        data = text.encode("utf-8")
        digest = sha256_hex(data)
        card_tags = {
            TAG_SHA256: digest,
            TAG_FORMAT: MODEL_FORMAT,
            TAG_THRESHOLD: repr(float(threshold)),
            TAG_FEATURE_SERVICE: feature_service,
            TAG_FEATURE_NAMES: json.dumps(list(names)),
            TAG_TRAIN_START: start.isoformat(),
            TAG_TRAIN_END: end.isoformat(),
            TAG_METRICS: json.dumps(metric_values, sort_keys=True),
            TAG_GIT_COMMIT: commit,
        }
        card_json = {
            "name": name,
            "format": MODEL_FORMAT,
            "file": MODEL_FILE,
            "sha256": digest,
            "threshold": float(threshold),
            "feature_service": feature_service,
            "feature_names": list(names),
            "train_start": start.isoformat(),
            "train_end": end.isoformat(),
            "metrics": metric_values,
            "params": {k: str(v) for k, v in (params or {}).items()},
            "git_commit": commit,
        }

        experiment_id = self._experiment_id(self.experiment or name)
        run_tags = {  # the card minus the long values (run tags hold 8,000 characters)
            TAG_SHA256: digest,
            TAG_FORMAT: MODEL_FORMAT,
            TAG_THRESHOLD: card_tags[TAG_THRESHOLD],
            TAG_FEATURE_SERVICE: feature_service,
            TAG_TRAIN_START: card_tags[TAG_TRAIN_START],
            TAG_TRAIN_END: card_tags[TAG_TRAIN_END],
            TAG_GIT_COMMIT: commit,
            MLFLOW_GIT_COMMIT_TAG: commit,
        }
        with self._mlflow_errors(f"cannot record a run for model {name!r}"):
            run = self._client.create_run(experiment_id, tags=run_tags, run_name=run_name)
        run_id = run.info.run_id
        status = RunStatus.to_string(RunStatus.FAILED)
        try:
            now = int(time.time() * 1000)
            all_params = [Param(str(k), str(v)) for k, v in (params or {}).items()]
            chunks = [all_params[i:i + _MAX_PARAMS_PER_BATCH]
                      for i in range(_MAX_PARAMS_PER_BATCH, len(all_params), _MAX_PARAMS_PER_BATCH)]
            with self._mlflow_errors(f"cannot record a run for model {name!r}"):
                self._client.log_batch(
                    run_id,
                    metrics=[Metric(k, v, now, 0) for k, v in metric_values.items()],
                    params=all_params[:_MAX_PARAMS_PER_BATCH],
                )
                for chunk in chunks:
                    self._client.log_batch(run_id, params=chunk)
            with tempfile.TemporaryDirectory(prefix="vigil-register-") as tmp:
                model_dir = Path(tmp) / MODEL_DIR
                model_dir.mkdir()
                (model_dir / MODEL_FILE).write_bytes(data)
                (model_dir / CARD_FILE).write_text(json.dumps(card_json, indent=2) + "\n")
                self._client.log_artifacts(run_id, str(model_dir), MODEL_DIR)
            for path in artifacts:
                if path.is_dir():
                    self._client.log_artifacts(run_id, str(path), f"{REPORTS_DIR}/{path.name}")
                else:
                    self._client.log_artifact(run_id, str(path), REPORTS_DIR)
            source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_DIR}"
            self._ensure_registered_model(name)
            with self._mlflow_errors(f"cannot create a version of model {name!r}"):
                mv = self._client.create_model_version(
                    name, source, run_id=run_id, tags=card_tags
                )
            status = RunStatus.to_string(RunStatus.FINISHED)
        finally:
            self._client.set_terminated(run_id, status)
        version = int(mv.version)
        if alias == CHAMPION:
            return self.promote(name, version)
        if alias == CHALLENGER:
            self._client.set_registered_model_alias(name, CHALLENGER, str(version))
        return self.get_card(name, version=version)

    # ------------------------------------------------------------------ reading

    def get_card(
        self, name: str, *, version: int | str | None = None, alias: str | None = None
    ) -> ModelCard:
        """The card of a version, or of the version an alias points to (default: champion)."""
        mv, aliases = self._resolve(name, version, alias)
        return _card(mv, aliases)

    def get_alias(self, name: str, alias: str) -> ModelCard:
        return self.get_card(name, alias=alias)

    def find(self, name: str, alias: str) -> ModelCard | None:
        """The card an alias points to, or None when the model or the alias does not exist
        (yet): "no champion" is a normal state, not an error."""
        _check_name(name)
        try:
            registered = self._client.get_registered_model(name)
        except MlflowException as e:
            if _error_code(e) != _RESOURCE_DOES_NOT_EXIST:
                raise
            return None
        if alias not in registered.aliases:
            return None
        return self.get_card(name, alias=alias)

    def list_models(self, name: str) -> list[ModelCard]:
        """All versions of ``name``, newest first."""
        aliases = self._registered(name).aliases
        versions: list[ModelVersion] = []
        token: str | None = None
        while True:
            with self._mlflow_errors(f"cannot list versions of model {name!r}"):
                page = self._client.search_model_versions(
                    f"name = '{name}'", page_token=token
                )
            versions.extend(page)
            token = page.token
            if not token:
                break
        cards = [_card(mv, _aliases_of(aliases, int(mv.version))) for mv in versions]
        return sorted(cards, key=lambda c: c.version, reverse=True)

    def load_model(
        self, name: str, *, version: int | str | None = None, alias: str | None = None
    ) -> LoadedModel:
        """Download ``model.txt`` of a version (default: the champion), check its sha256 against
        the registry and build the booster from the text. Raises :class:`ModelIntegrityError`
        when the digest or the feature names differ from the card."""
        card = self.get_card(name, version=version, alias=alias)
        with tempfile.TemporaryDirectory(prefix="vigil-load-") as tmp:
            with self._mlflow_errors(f"cannot download {card.label} from {card.source}"):
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{card.source}/{MODEL_FILE}",
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.tracking_uri,
                )
            data = Path(local).read_bytes()
        actual = sha256_hex(data)
        if actual != card.sha256:
            raise ModelIntegrityError(
                f"refusing to load {card.label}: sha256 of {MODEL_FILE} is {actual}, the registry "
                f"recorded {card.sha256} (the artifact at {card.source} was modified or corrupted)"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ModelIntegrityError(f"{card.label}: {MODEL_FILE} is not UTF-8 text") from e
        booster = _parse_booster(text, what=card.label, error=ModelIntegrityError)
        if tuple(booster.feature_name()) != card.feature_names:
            raise ModelIntegrityError(
                f"{card.label}: booster features {booster.feature_name()} differ from the "
                f"registry's {list(card.feature_names)}"
            )
        return LoadedModel(booster=booster, card=card)

    def champion_history(self, name: str) -> list[int]:
        """Earlier champions, oldest first (the last one is where rollback goes)."""
        return _history(self._registered(name))

    # ------------------------------------------------------------------ aliases

    def set_challenger(self, name: str, version: int | str) -> ModelCard:
        mv, _ = self._resolve(name, version, None)
        self._client.set_registered_model_alias(name, CHALLENGER, mv.version)
        return self.get_card(name, version=mv.version)

    def promote(self, name: str, version: int | str) -> ModelCard:
        """Make ``version`` the champion; the previous champion is remembered for rollback. A
        challenger alias on the promoted version is removed. Promoting the champion is a no-op."""
        mv, _ = self._resolve(name, version, None)
        target = int(mv.version)
        registered = self._registered(name)
        current = registered.aliases.get(CHAMPION)
        if current is not None and int(current) == target:
            return self.get_card(name, version=target)
        if current is not None:
            history = [*_history(registered), int(current)][-MAX_CHAMPION_HISTORY:]
            self._client.set_registered_model_tag(name, TAG_CHAMPION_HISTORY, json.dumps(history))
        self._client.set_registered_model_alias(name, CHAMPION, str(target))
        challenger = registered.aliases.get(CHALLENGER)
        if challenger is not None and int(challenger) == target:
            self._client.delete_registered_model_alias(name, CHALLENGER)
        return self.get_card(name, version=target)

    def rollback(self, name: str) -> ModelCard:
        """Put the previous champion back; the rolled-back version keeps no alias."""
        registered = self._registered(name)
        current = registered.aliases.get(CHAMPION)
        history = _history(registered)
        while history and current is not None and history[-1] == int(current):
            history.pop()  # the alias was moved by hand to an earlier champion
        if not history:
            raise RegistryError(
                f"model {name!r} has no previous champion to roll back to "
                f"(champion: {'version ' + str(current) if current else 'none'})"
            )
        previous = history[-1]
        gone = (
            f"cannot roll back model {name!r}: the previous champion, version {previous}, no "
            "longer exists; promote a version explicitly with `vigil models promote`"
        )
        mv, _ = self._resolve(name, previous, None, missing=gone)
        self._client.set_registered_model_alias(name, CHAMPION, mv.version)
        self._client.set_registered_model_tag(name, TAG_CHAMPION_HISTORY, json.dumps(history[:-1]))
        return self.get_card(name, version=previous)

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _mlflow_errors(self, what: str) -> Iterator[None]:
        """Invalid or missing inputs reported by MLflow become a :class:`RegistryError`."""
        try:
            yield
        except MlflowException as e:
            if _error_code(e) not in (_INVALID_PARAMETER_VALUE, _RESOURCE_DOES_NOT_EXIST):
                raise
            raise RegistryError(f"{what}: {e.message}") from e

    def _registered(self, name: str) -> RegisteredModel:
        _check_name(name)
        try:
            return self._client.get_registered_model(name)
        except MlflowException as e:
            if _error_code(e) != _RESOURCE_DOES_NOT_EXIST:
                raise
            raise RegistryError(
                f"no registered model named {name!r} in the registry at {self._display_uri}"
            ) from e

    def _resolve(
        self,
        name: str,
        version: int | str | None,
        alias: str | None,
        *,
        missing: str | None = None,
    ) -> tuple[ModelVersion, tuple[str, ...]]:
        if version is not None and alias is not None:
            raise ValueError("give a version or an alias, not both")
        registered = self._registered(name)
        if version is None:
            alias = alias or CHAMPION
            target = registered.aliases.get(alias)
            if target is None:
                known = ", ".join(
                    f"{a} -> version {v}" for a, v in sorted(registered.aliases.items())
                )
                raise RegistryError(
                    f"model {name!r} has no alias {alias!r} (aliases: {known or 'none'})"
                )
            number = int(target)
        else:
            number = _version_number(version)
        try:
            mv = self._client.get_model_version(name, str(number))
        except MlflowException as e:
            if _error_code(e) != _RESOURCE_DOES_NOT_EXIST:
                raise
            raise RegistryError(missing or f"model {name!r} has no version {number}") from e
        return mv, _aliases_of(registered.aliases, number)

    def _experiment_id(self, experiment: str) -> str:
        found = self._client.get_experiment_by_name(experiment)
        if found is None:
            location = self.artifact_root.as_uri() if self.artifact_root is not None else None
            if self.artifact_root is not None:
                self.artifact_root.mkdir(parents=True, exist_ok=True)
            try:
                return self._client.create_experiment(experiment, artifact_location=location)
            except MlflowException as e:
                if _error_code(e) != _RESOURCE_ALREADY_EXISTS:
                    raise
                found = self._client.get_experiment_by_name(experiment)  # created concurrently
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise RegistryError(
                f"experiment {experiment!r} is deleted in the registry at {self._display_uri}; "
                "restore it (mlflow experiments restore) or use another experiment"
            )
        return str(found.experiment_id)

    def _ensure_registered_model(self, name: str) -> None:
        try:
            self._client.get_registered_model(name)
        except MlflowException as e:
            if _error_code(e) != _RESOURCE_DOES_NOT_EXIST:
                raise
            try:
                self._client.create_registered_model(
                    name, description="Vigil model: LightGBM text format, sha256 checked at load."
                )
            except MlflowException as exists:
                if _error_code(exists) != _RESOURCE_ALREADY_EXISTS:
                    raise

    @property
    def _display_uri(self) -> str:
        """The tracking URI without a password."""
        parts = urllib.parse.urlsplit(self.tracking_uri)
        if parts.password is None:
            return self.tracking_uri
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------------- helpers


def _check_name(name: str) -> None:
    if not _MODEL_NAME.match(name):
        raise RegistryError(
            f"invalid model name {name!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )


def _version_number(version: int | str) -> int:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise RegistryError(f"a model version is a positive integer, got {version!r}")
    return int(text)


def _aliases_of(aliases: Mapping[str, Any], version: int) -> tuple[str, ...]:
    return tuple(sorted(a for a, v in aliases.items() if int(v) == version))


def _history(registered: RegisteredModel) -> list[int]:
    raw = registered.tags.get(TAG_CHAMPION_HISTORY)
    if raw is None:
        return []
    try:
        history = json.loads(raw)
    except json.JSONDecodeError as e:
        raise RegistryError(
            f"model {registered.name!r}: tag {TAG_CHAMPION_HISTORY} is not JSON: {raw!r}"
        ) from e
    if not isinstance(history, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in history
    ):
        raise RegistryError(
            f"model {registered.name!r}: tag {TAG_CHAMPION_HISTORY} must be a list of versions, "
            f"got {raw!r}"
        )
    return history


def _as_date(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def _model_text(model: lightgbm.Booster | Path | str) -> str:
    if isinstance(model, lightgbm.Booster):
        return model.model_to_string()
    if isinstance(model, Path):
        try:
            return model.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read LightGBM model file {model}: {e}") from e
    return model


def _parse_booster(text: str, *, what: str, error: type[Exception]) -> lightgbm.Booster:
    """A booster from LightGBM's text format (the only format Vigil stores)."""
    if not text.startswith("tree\n"):
        raise error(f"{what} is not in LightGBM's text model format")
    try:
        return lightgbm.Booster(model_str=text)
    except lightgbm.basic.LightGBMError as e:
        raise error(f"{what}: LightGBM cannot parse the model text: {e}") from e


def _card(mv: ModelVersion, aliases: tuple[str, ...]) -> ModelCard:
    tags = mv.tags
    label = f"{mv.name} version {mv.version}"
    missing = [t for t in (TAG_SHA256, TAG_THRESHOLD, TAG_FEATURE_SERVICE, TAG_FEATURE_NAMES,
                           TAG_TRAIN_START, TAG_TRAIN_END, TAG_METRICS) if t not in tags]
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
