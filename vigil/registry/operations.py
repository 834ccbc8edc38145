"""MLflow operations: register, read, load and move aliases of model versions (:class:`Registry`).

Every registered version is one MLflow run plus one model version. The run (experiment
``<name>``) holds the training params, the metrics, the short card tags and the artifacts
``model/model.txt``, ``model/model.json`` and any reports under ``reports/``; the model
version's source is the run's ``model`` folder and its tags are the whole card.

Aliases ``champion`` and ``challenger`` name the serving and the candidate model. Promotions
keep the ordered list of earlier champions in the registered-model tag
``vigil.champion_history``, so that :meth:`Registry.rollback` can put the previous champion
back.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import lightgbm
import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunStatus
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from vigil.errors import RegistryError
from vigil.registry.card import CARD_FILE, CardDraft, ModelCard, card_from_version, draft_card
from vigil.registry.lightgbm_flavor import MODEL_FILE, model_text, parse_booster, verified_booster

if TYPE_CHECKING:
    from vigil.settings import Settings

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
Alias = Literal["champion", "challenger"]

#: Folders of a registration run: the model (the version's source) and the attached reports.
MODEL_DIR: Final = "model"
REPORTS_DIR: Final = "reports"

TAG_CHAMPION_HISTORY: Final = "vigil.champion_history"
#: Earlier champions remembered for rollback (the registered-model tag stays small).
MAX_CHAMPION_HISTORY: Final = 100

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$")
_REMOTE_SCHEMES: Final = frozenset({"http", "https", "databricks", "databricks-uc", "uc"})
_MAX_PARAMS_PER_BATCH: Final = 100
_RESOURCE_DOES_NOT_EXIST: Final = "RESOURCE_DOES_NOT_EXIST"
_RESOURCE_ALREADY_EXISTS: Final = "RESOURCE_ALREADY_EXISTS"
_INVALID_PARAMETER_VALUE: Final = "INVALID_PARAMETER_VALUE"


@dataclass(frozen=True)
class LoadedModel:
    """A booster whose bytes matched the registry's sha256, with its card."""

    booster: lightgbm.Booster = field(repr=False)
    card: ModelCard


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
        text = model_text(model)
        booster = parse_booster(text, what="the model to register", error=ValueError)
        card = draft_card(
            name, text, booster, threshold=threshold, feature_service=feature_service,
            data_range=data_range, metrics=metrics, params=params, feature_names=feature_names,
            git_commit=git_commit,
        )
        for path in artifacts:
            if not path.exists():
                raise ValueError(f"artifact {path} does not exist")
        experiment_id = self._experiment_id(self.experiment or name)
        with self._run(experiment_id, card, run_name) as run:
            self._log_params_and_metrics(run.info.run_id, card)
            self._log_model(run.info.run_id, text, card)
            self._log_reports(run.info.run_id, artifacts)
            version = self._create_version(run, card)
        return self._set_alias(name, version, alias)

    @contextmanager
    def _run(self, experiment_id: str, card: CardDraft, run_name: str | None) -> Iterator[Run]:
        """A registration run tagged with the card; FINISHED when the block completes, FAILED
        when it raises."""
        with self._mlflow_errors(f"cannot record a run for model {card.name!r}"):
            run = self._client.create_run(experiment_id, tags=card.run_tags(), run_name=run_name)
        status = RunStatus.to_string(RunStatus.FAILED)
        try:
            yield run
            status = RunStatus.to_string(RunStatus.FINISHED)
        finally:
            self._client.set_terminated(run.info.run_id, status)

    def _log_params_and_metrics(self, run_id: str, card: CardDraft) -> None:
        """The metrics and the training params (MLflow takes 100 params per batch)."""
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in card.params.items()]
        more = [params[i:i + _MAX_PARAMS_PER_BATCH]
                for i in range(_MAX_PARAMS_PER_BATCH, len(params), _MAX_PARAMS_PER_BATCH)]
        with self._mlflow_errors(f"cannot record a run for model {card.name!r}"):
            self._client.log_batch(
                run_id,
                metrics=[Metric(k, v, now, 0) for k, v in card.metrics.items()],
                params=params[:_MAX_PARAMS_PER_BATCH],
            )
            for batch in more:
                self._client.log_batch(run_id, params=batch)

    def _log_model(self, run_id: str, text: str, card: CardDraft) -> None:
        """``model/model.txt`` (the bytes the card's sha256 is of) and ``model/model.json``."""
        with tempfile.TemporaryDirectory(prefix="vigil-register-") as tmp:
            model_dir = Path(tmp) / MODEL_DIR
            model_dir.mkdir()
            (model_dir / MODEL_FILE).write_bytes(text.encode("utf-8"))
            (model_dir / CARD_FILE).write_text(card.to_json())
            self._client.log_artifacts(run_id, str(model_dir), MODEL_DIR)

    def _log_reports(self, run_id: str, artifacts: Sequence[Path]) -> None:
        """Files and folders under ``reports/``."""
        for path in artifacts:
            if path.is_dir():
                self._client.log_artifacts(run_id, str(path), f"{REPORTS_DIR}/{path.name}")
            else:
                self._client.log_artifact(run_id, str(path), REPORTS_DIR)

    def _create_version(self, run: Run, card: CardDraft) -> int:
        """A new version of the card's model, its source the run's model folder."""
        source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_DIR}"
        self._ensure_registered_model(card.name)
        with self._mlflow_errors(f"cannot create a version of model {card.name!r}"):
            mv = self._client.create_model_version(
                card.name, source, run_id=run.info.run_id, tags=card.version_tags()
            )
        return int(mv.version)

    def _set_alias(self, name: str, version: int, alias: Alias | None) -> ModelCard:
        """Give a new version its alias (a champion through :meth:`promote`); its card."""
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
        return card_from_version(mv, aliases)

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
        cards = [card_from_version(mv, _aliases_of(aliases, int(mv.version))) for mv in versions]
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
        booster = verified_booster(
            data, sha256=card.sha256, feature_names=card.feature_names, what=card.label,
            source=card.source,
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

