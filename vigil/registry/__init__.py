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

One concept per module: :mod:`~vigil.registry.card` (the model card and its tags),
:mod:`~vigil.registry.lightgbm_flavor` (the stored format: text, sha256, parsing) and
:mod:`~vigil.registry.operations` (:class:`Registry`, MLflow operations).
"""

from vigil.registry.card import (
    CARD_FILE,
    MLFLOW_GIT_COMMIT_TAG,
    TAG_FEATURE_NAMES,
    TAG_FEATURE_SERVICE,
    TAG_FORMAT,
    TAG_GIT_COMMIT,
    TAG_METRICS,
    TAG_SHA256,
    TAG_THRESHOLD,
    TAG_TRAIN_END,
    TAG_TRAIN_START,
    UNKNOWN_COMMIT,
    CardDraft,
    ModelCard,
    detect_git_commit,
)
from vigil.registry.lightgbm_flavor import MODEL_FILE, MODEL_FORMAT, sha256_hex
from vigil.registry.operations import (
    CHALLENGER,
    CHAMPION,
    MAX_CHAMPION_HISTORY,
    MODEL_DIR,
    REPORTS_DIR,
    TAG_CHAMPION_HISTORY,
    Alias,
    LoadedModel,
    Registry,
    default_artifact_root,
)

__all__ = [
    "CARD_FILE",
    "CHALLENGER",
    "CHAMPION",
    "MAX_CHAMPION_HISTORY",
    "MLFLOW_GIT_COMMIT_TAG",
    "MODEL_DIR",
    "MODEL_FILE",
    "MODEL_FORMAT",
    "REPORTS_DIR",
    "TAG_CHAMPION_HISTORY",
    "TAG_FEATURE_NAMES",
    "TAG_FEATURE_SERVICE",
    "TAG_FORMAT",
    "TAG_GIT_COMMIT",
    "TAG_METRICS",
    "TAG_SHA256",
    "TAG_THRESHOLD",
    "TAG_TRAIN_END",
    "TAG_TRAIN_START",
    "UNKNOWN_COMMIT",
    "Alias",
    "CardDraft",
    "LoadedModel",
    "ModelCard",
    "Registry",
    "default_artifact_root",
    "detect_git_commit",
    "sha256_hex",
]
