"""Step 5, register: the candidate the gate let through becomes a new registry version.

:func:`register_candidate` runs in the pipeline's ``dsl.If`` branch,
:func:`components.gate.explain_refusal` in its ``dsl.Else`` branch; both end the run with a
:class:`~components.results.Registration`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.evaluate import current_champion
from components.results import Evaluation, Registration
from components.runtime import say
from components.train import TRAINING_FILE, TrainingResult
from vigil.errors import ConfigError
from vigil.registry import CHALLENGER, CHAMPION, MODEL_FILE, Alias, Registry
from vigil.settings import Settings

STEP = "register"


def register_candidate(
    model_dir: Path,
    report_dir: Path,
    evaluation: Evaluation,
    *,
    settings: Settings,
    alias: str,
    params: dict[str, Any] | None = None,
) -> Registration:
    """Register ``model_dir/model.txt`` with its card (threshold, feature service, training
    window, test metrics), the evaluation report and ``training.json`` as run artifacts, and
    set ``alias``. A ``champion`` decision taken when there was no champion yields
    ``challenger`` if a champion appeared in the meantime (another run won the race)."""
    if alias not in (CHAMPION, CHALLENGER):
        raise ConfigError(f"register: alias must be {CHAMPION!r} or {CHALLENGER!r}, got {alias!r}")
    name = settings.registry.model_name
    registry = Registry.from_settings(settings)
    chosen: Alias = CHAMPION if alias == CHAMPION else CHALLENGER
    note = ""
    if chosen == CHAMPION and current_champion(registry, name) is not None:
        chosen, note = CHALLENGER, "; a champion appeared since evaluation, so: challenger"
    training = TrainingResult.read(model_dir)
    reports = sorted(p for p in report_dir.iterdir() if p.is_file())
    windows = evaluation.data.windows
    card = registry.register_model(
        model_dir / MODEL_FILE,
        name=name,
        threshold=evaluation.threshold,
        feature_service=evaluation.data.feature_service,
        data_range=evaluation.train_range,
        metrics=evaluation.metrics,
        params={
            **training.params,
            "best_iteration": training.best_iteration,
            "train_start": windows.train_start.isoformat(),
            "valid_start": windows.valid_start.isoformat(),
            "test_start": windows.test_start.isoformat(),
            "test_end": windows.test_end.isoformat(),
            "delay_days": windows.delay_days,
            "comparison_metric": evaluation.comparison_metric,
            "quality_floor": evaluation.quality_floor,
            **(params or {}),
        },
        feature_names=training.feature_names,
        artifacts=[*reports, model_dir / TRAINING_FILE],
        alias=chosen,
        run_name=f"{name}-{windows.train_start}-{windows.test_end}",
    )
    reason = evaluation.reason + note
    say(STEP, f"registered {card.label} as {chosen} ({reason})")
    return Registration(
        registered=True, model_name=name, version=card.version, alias=chosen, reason=reason
    )
