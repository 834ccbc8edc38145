"""``fraud-training``: raw transactions in, a registered fraud model out.

    validate ─► featurize ─► train ─► evaluate ─┬─ dsl.If(decision != "rejected") ─► register ─┐
     (GE gate)   (offline    (LightGBM) (test     │                                              │
                  store +               window,   └─ dsl.Else ─────────────────────► not-registered
                  fraud_v1              vs. the         dsl.If(rollout_target != "none") ─► deploy
                  via Feast)            champion)       (canary rollout of a challenger)

The same function runs on a cluster (compiled to ``fraud_training.yaml``, submitted with
``kfp run submit -f``) and locally (``vigil run fraud --local`` through ``kfp.local``).
It returns the evaluation (metrics of the candidate and of the champion on the same rows, the
gate's decision and reason) and the registration (version and alias, or why none) as JSON.

Parameters that name places (``transactions``, ``vigil_home``, ``vigil_config``) are paths as the
components see them: on a cluster, paths on the PersistentVolumeClaim :data:`DATA_CLAIM` that
every step mounts at :data:`DATA_MOUNT` (kfp-kubernetes; ``kfp.local`` ignores it); ``vigil_home``
holds the offline store (and, without a tracking server, the MLflow database). Empty
``vigil_home`` / ``vigil_config`` / ``model_name`` mean: from the component's environment
(``VIGIL_HOME``, ``VIGIL_CONFIG``, ``MLFLOW_TRACKING_URI``, ``VIGIL_REDIS__URL``) and defaults.
"""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl.pipeline_task import PipelineTask

from components.kfp_components import (
    deploy,
    evaluate,
    featurize,
    not_registered,
    register,
    train,
    validate,
)
from pipelines.params import DEFAULTS, FraudTrainingParams

__all__ = ["PIPELINE_NAME", "FraudTrainingOutputs", "FraudTrainingParams", "fraud_training"]

PIPELINE_NAME = "fraud-training"
#: The claim every step mounts (the chart's ``materialize.dataClaim`` default: the materialize
#: and drift jobs read the same volume) and where: where the chart mounts it too (Vigil's home).
DATA_CLAIM = "vigil-data"
DATA_MOUNT = "/var/lib/vigil"


def _on_the_data_volume(*tasks: PipelineTask) -> None:
    for task in tasks:
        kubernetes.mount_pvc(task, pvc_name=DATA_CLAIM, mount_path=DATA_MOUNT)


class FraudTrainingOutputs(NamedTuple):
    evaluation: str
    registration: str


@dsl.pipeline(
    name=PIPELINE_NAME,
    description=(
        "Validate raw card transactions, featurize them into the Feast offline store, train "
        "LightGBM on the point-in-time fraud_v1 training set, evaluate it against the current "
        "champion on a later window (label-delay gap, known compromised cards removed), "
        "register it as champion or challenger when it is better, and optionally roll a "
        "challenger out (canary steps decided by Prometheus)."
    ),
)
def fraud_training(
    transactions: str,
    vigil_home: str = "",
    vigil_config: str = "",
    model_name: str = "",
    train_days: int = DEFAULTS.train_days,
    valid_days: int = DEFAULTS.valid_days,
    delay_days: int = DEFAULTS.delay_days,
    test_days: int = DEFAULTS.test_days,
    test_end: str = "",
    comparison_metric: str = DEFAULTS.comparison_metric,
    quality_floor: float = DEFAULTS.quality_floor,
    min_improvement: float = DEFAULTS.min_improvement,
    min_fraud_share: float = DEFAULTS.min_fraud_share,
    max_fraud_share: float = DEFAULTS.max_fraud_share,
    lightgbm_params: str = DEFAULTS.lightgbm_params,
    rollout_target: str = DEFAULTS.rollout_target,
    feature_engine: str = DEFAULTS.feature_engine,
    spark_master: str = DEFAULTS.spark_master,
) -> FraudTrainingOutputs:
    """Train, evaluate and (when better) register the fraud model.

    Args:
        transactions: Raw transactions: a parquet/CSV file or a folder of daily files.
        vigil_home: Vigil's state folder (offline store, MLflow SQLite when no tracking server).
        vigil_config: A Vigil YAML settings file readable by the steps.
        model_name: Registered model name (empty: the settings' ``registry.model_name``).
        train_days: Days of the training window (its last ``valid_days`` are the validation
            slice for early stopping and the decision threshold).
        valid_days: Days of the validation slice at the end of the training window.
        delay_days: Label delay: days between the training window and the test window.
        test_days: Days of the test window.
        test_end: Last test day, YYYY-MM-DD (empty: the last day in the data).
        comparison_metric: auc_roc, average_precision or card_precision_at_100, compared
            between the candidate and the champion on the same test rows.
        quality_floor: Lowest comparison_metric a candidate may have to be registered at all
            (with no champion yet, passing it makes the candidate the champion).
        min_improvement: How much the candidate must beat the champion by (a tie is not
            better).
        min_fraud_share: Validation gate: lowest acceptable share of frauds.
        max_fraud_share: Validation gate: highest acceptable share of frauds.
        lightgbm_params: JSON object of LightGBM parameter overrides.
        rollout_target: none (register only), local, kserve or helm: where a registered
            challenger is rolled out (canary steps, promoted or rolled back by the analysis).
        feature_engine: What runs the feature SQL of the featurize step: duckdb (in the step's
            process) or spark (a PySpark session; the same definition, tested equal).
        spark_master: With feature_engine spark: local[N] inside the step, or a cluster's
            master URL (spark://host:7077, k8s://...).
    """
    checked = validate(
        transactions=transactions,
        min_fraud_share=min_fraud_share,
        max_fraud_share=max_fraud_share,
    )
    features = featurize(
        transactions=transactions,
        vigil_home=vigil_home,
        vigil_config=vigil_config,
        train_days=train_days,
        valid_days=valid_days,
        delay_days=delay_days,
        test_days=test_days,
        test_end=test_end,
        feature_engine=feature_engine,
        spark_master=spark_master,
    ).after(checked)
    trained = train(dataset=features.outputs["dataset"], lightgbm_params=lightgbm_params)
    evaluated = evaluate(
        dataset=features.outputs["dataset"],
        model=trained.outputs["model"],
        data=features.outputs["Output"],
        vigil_home=vigil_home,
        vigil_config=vigil_config,
        model_name=model_name,
        comparison_metric=comparison_metric,
        quality_floor=quality_floor,
        min_improvement=min_improvement,
    )
    with dsl.If(evaluated.outputs["decision"] != "rejected", name="better"):
        registered = register(
            model=trained.outputs["model"],
            report=evaluated.outputs["report"],
            evaluation=evaluated.outputs["evaluation"],
            vigil_home=vigil_home,
            vigil_config=vigil_config,
            model_name=model_name,
            alias=evaluated.outputs["decision"],
        )
        with dsl.If(rollout_target != "none", name="rollout"):
            deployed = deploy(
                registration=registered.output,
                vigil_home=vigil_home,
                vigil_config=vigil_config,
                model_name=model_name,
                rollout_target=rollout_target,
            )
            _on_the_data_volume(deployed)
        _on_the_data_volume(registered)
    with dsl.Else(name="not-better"):
        refused = not_registered(
            evaluation=evaluated.outputs["evaluation"],
            vigil_config=vigil_config,
            model_name=model_name,
        )
        _on_the_data_volume(refused)
    _on_the_data_volume(checked, features, trained, evaluated)
    return FraudTrainingOutputs(
        evaluation=evaluated.outputs["evaluation"],
        registration=dsl.OneOf(registered.output, refused.output),
    )
