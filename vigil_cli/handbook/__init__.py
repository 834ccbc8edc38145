"""The handbook benchmark: Vigil's fraud model under the protocol of Le Borgne et al.

"Reproducible Machine Learning for Credit Card Fraud Detection" evaluates models on its simulated
transactions with a fixed protocol (``get_train_test_set``, ``prequentialSplit``,
``model_selection_wrapper`` and ``get_summary_performances`` of its ``shared_functions``):

* **One split** (chapter 3): train on 7 days from the *anchor* (2018-07-25 in the book), wait a
  7-day delay (labels are not known yet), test on the next 7 days. Test transactions of cards
  already known to be compromised are dropped (:func:`~vigil.evaluation.metrics.
  drop_known_compromised`).
* **Prequential folds** (chapter 5): fold ``i`` is the split whose training starts ``7 i`` days
  before a fold start. The 4 *validation* folds start at ``anchor - (delay + test)`` = anchor
  − 14 days, the 4 *test* folds at ``anchor + (n_folds − 1) · test`` = anchor + 21 days
  (2018-08-15). Every candidate configuration is scored on the validation folds; for each metric
  the configuration with the best mean validation score is chosen, and the test figure of that
  metric is its mean (± population standard deviation, as scikit-learn's ``GridSearchCV``
  reports) over the 4 test folds. The test folds never take part in the choice.

Days are calendar days of ``TX_DATETIME``: the book selects training rows by ``TX_DATETIME`` and
test rows by ``TX_TIME_DAYS``, which counts calendar days from its first day, so both agree on
data in the handbook schema. Features are computed once over the whole history with
:func:`feature_store.transforms.batch_features` (they only look back in time), then split.

Chapter 3 trains one model: its configuration is chosen on the same validation folds (the book's
chapter 5 defines them from the same anchor), by average precision unless told otherwise.

Dates default to the book's; on data that does not cover them the anchor is placed 115 days
after the data's first day (where the book's anchor sits in its data) or as late as the data
allows, and data too short for the protocol is a :class:`~vigil.errors.DataError`.

One concept per module: :mod:`~vigil_cli.handbook.published` (the book's figures),
:mod:`~vigil_cli.handbook.protocol` (folds and their dates), :mod:`~vigil_cli.handbook.data`
(features and fold sets), :mod:`~vigil_cli.handbook.families` (model families and their
grids), :mod:`~vigil_cli.handbook.running` (scoring folds, choosing, the benchmark) and
:mod:`~vigil_cli.handbook.report` (the table).
"""

# Names of the metrics and the feature definition, as callers of the handbook use them.
from feature_store.transforms import DEFAULT_SPEC
from vigil.evaluation.metrics import METRIC_LABELS, METRICS
from vigil_cli.handbook.data import (
    DAY,
    BenchmarkData,
    FoldSets,
    PreparedData,
    fold_sets,
    prepare,
)
from vigil_cli.handbook.families import (
    ROUNDS,
    Candidate,
    LightGBMFamily,
    LogisticRegressionFamily,
    ModelFamily,
    default_families,
    lightgbm_grid,
    raw_scores_at,
)
from vigil_cli.handbook.protocol import (
    DELAY_DAYS,
    HANDBOOK_ANCHOR,
    HANDBOOK_DATA_START,
    N_FOLDS,
    PROTOCOLS,
    TEST_DAYS,
    TRAIN_DAYS,
    Fold,
    FoldKind,
    ProtocolName,
    ProtocolPlan,
    feature_warmup_days,
    folds_for,
    plan_protocol,
    prequential_folds,
)
from vigil_cli.handbook.published import (
    PUBLISHED,
    Published,
    best_published,
)
from vigil_cli.handbook.report import (
    format_table,
)
from vigil_cli.handbook.running import (
    SCORE,
    SELECTIONS,
    BenchmarkResult,
    CandidateResult,
    FoldProgress,
    FoldResult,
    ModelResult,
    Selection,
    ValidationCache,
    choose,
    run_benchmark,
    run_model,
    score_folds,
)

__all__ = [
    "DAY",
    "DEFAULT_SPEC",
    "DELAY_DAYS",
    "HANDBOOK_ANCHOR",
    "HANDBOOK_DATA_START",
    "METRICS",
    "METRIC_LABELS",
    "N_FOLDS",
    "PROTOCOLS",
    "PUBLISHED",
    "ROUNDS",
    "SCORE",
    "SELECTIONS",
    "TEST_DAYS",
    "TRAIN_DAYS",
    "BenchmarkData",
    "BenchmarkResult",
    "Candidate",
    "CandidateResult",
    "Fold",
    "FoldKind",
    "FoldProgress",
    "FoldResult",
    "FoldSets",
    "LightGBMFamily",
    "LogisticRegressionFamily",
    "ModelFamily",
    "ModelResult",
    "PreparedData",
    "ProtocolName",
    "ProtocolPlan",
    "Published",
    "Selection",
    "ValidationCache",
    "best_published",
    "choose",
    "default_families",
    "feature_warmup_days",
    "fold_sets",
    "folds_for",
    "format_table",
    "lightgbm_grid",
    "plan_protocol",
    "prepare",
    "prequential_folds",
    "raw_scores_at",
    "run_benchmark",
    "run_model",
    "score_folds",
]
