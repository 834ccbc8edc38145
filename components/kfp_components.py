"""Thin ``@dsl.component`` adapters over the plain step functions.

Each body imports what it needs *inside* the function (KFP serialises the function's source
into the pipeline spec and runs it in the component image, where Vigil is installed), maps KFP
inputs and artifact paths to arguments, calls one plain function inside
:func:`components.runtime.step`, and returns small results as JSON strings.

The image is :data:`components.image.COMPONENT_IMAGE`. ``install_kfp_package=False``: the image
already has the pinned ``kfp`` (a dependency of Vigil), so nothing is installed at run time.
No ``from __future__ import annotations`` here: KFP reads the annotations as types, and the
serialised source of each function must stand alone (hence the inline ``NamedTuple``).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate(
    transactions: str,
    min_fraud_share: float,
    max_fraud_share: float,
    report: Output[HTML],
    results: Output[Artifact],
) -> str:
    """Validation gate (Great Expectations) on the raw transactions; fails the run on violations."""
    import json
    from pathlib import Path

    from components.runtime import step
    from components.validate import STEP, validate_data, validation_config

    with step(STEP):
        outcome = validate_data(
            transactions,
            html_report=Path(report.path),
            json_report=Path(results.path),
            config=validation_config(min_fraud_share, max_fraud_share),
        )
    return json.dumps(outcome.to_dict())


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def featurize(
    transactions: str,
    vigil_home: str,
    vigil_config: str,
    train_days: int,
    valid_days: int,
    delay_days: int,
    test_days: int,
    test_end: str,
    feature_engine: str,
    spark_master: str,
    dataset: Output[Dataset],
) -> str:
    """Features into the Feast offline store (SQL on duckdb or spark); the point-in-time
    dataset of fraud_v1."""
    from pathlib import Path

    from components.featurize import STEP, featurize_data
    from components.results import to_json
    from components.runtime import step, step_settings
    from components.windows import WindowSpec

    with step(STEP):
        summary = featurize_data(
            transactions,
            settings=step_settings(vigil_home, vigil_config),
            windows=WindowSpec.from_params(train_days, valid_days, delay_days, test_days, test_end),
            dataset=Path(dataset.path),
            engine=feature_engine,
            spark_master=spark_master,
        )
    return to_json(summary)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def train(dataset: Input[Dataset], lightgbm_params: str, model: Output[Model]) -> float:
    """LightGBM on the training rows; returns the threshold chosen on the validation slice."""
    from pathlib import Path

    from components.runtime import step
    from components.train import STEP, parse_params, train_model

    with step(STEP):
        result = train_model(
            Path(dataset.path), Path(model.path), params=parse_params(lightgbm_params)
        )
    model.metadata.update(
        {"framework": "lightgbm", "threshold": result.threshold,
         "best_iteration": result.best_iteration}
    )
    return result.threshold


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    data: str,
    vigil_home: str,
    vigil_config: str,
    model_name: str,
    comparison_metric: str,
    quality_floor: float,
    min_improvement: float,
    report: Output[Artifact],
    report_html: Output[HTML],
    metrics: Output[Metrics],
) -> NamedTuple("EvaluateOutputs", [("decision", str), ("evaluation", str)]):  # type: ignore[valid-type]
    """Candidate and champion on the same test rows; the gate's decision; the report."""
    from pathlib import Path

    from components.evaluate import STEP, evaluate_model, ui_metrics
    from components.results import Featurization, to_json
    from components.runtime import step, step_settings

    with step(STEP):
        result = evaluate_model(
            Path(dataset.path),
            Path(model.path),
            Path(report.path),
            data=Featurization.from_json(data),
            settings=step_settings(vigil_home, vigil_config, model_name),
            comparison_metric=comparison_metric,
            quality_floor=quality_floor,
            min_improvement=min_improvement,
            report_uri=report.uri,
            html_copy=Path(report_html.path),
        )
    for key, value in ui_metrics(result).items():
        metrics.log_metric(key, value)
    return (result.decision, to_json(result))


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    report: Input[Artifact],
    evaluation: str,
    vigil_home: str,
    vigil_config: str,
    model_name: str,
    alias: str,
) -> str:
    """Register the candidate (model, card, report) in the registry under ``alias``."""
    from pathlib import Path

    from components.register import STEP, register_candidate
    from components.results import Evaluation, to_json
    from components.runtime import step, step_settings

    with step(STEP):
        result = register_candidate(
            Path(model.path),
            Path(report.path),
            Evaluation.from_json(evaluation),
            settings=step_settings(vigil_home, vigil_config, model_name),
            alias=alias,
        )
    return to_json(result)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def deploy(
    registration: str,
    vigil_home: str,
    vigil_config: str,
    model_name: str,
    rollout_target: str,
) -> str:
    """Roll a registered challenger out on ``rollout_target``; wait for promotion or rollback."""
    from components.deploy import STEP, deploy_candidate
    from components.results import Registration, to_json
    from components.runtime import step, step_settings

    with step(STEP):
        result = deploy_candidate(
            Registration.from_json(registration),
            settings=step_settings(vigil_home, vigil_config, model_name),
            target=rollout_target,
        )
    return to_json(result)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def not_registered(evaluation: str, vigil_config: str, model_name: str) -> str:
    """The gate refused the candidate: say why; the registry is left unchanged."""
    from components.gate import REFUSAL_STEP, explain_refusal
    from components.results import Evaluation, to_json
    from components.runtime import step, step_settings

    with step(REFUSAL_STEP):
        settings = step_settings("", vigil_config, model_name)
        result = explain_refusal(Evaluation.from_json(evaluation), settings.registry.model_name)
    return to_json(result)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def drift(
    vigil_home: str,
    vigil_config: str,
    model_name: str,
    current_window: str,
    reference: str,
    report: Output[HTML],
) -> str:
    """The drift job: the inference log's window against the served model's training set,
    pushed to the configured Pushgateway; "not enough data" is a result, not a failure."""
    import json
    from pathlib import Path

    from components.drift import STEP, drift_check
    from components.runtime import step, step_settings

    with step(STEP):
        result = drift_check(
            settings=step_settings(vigil_home, vigil_config, model_name),
            current_window=current_window,
            reference=reference,
            html_report=Path(report.path),
        )
    return json.dumps(result, default=str)
