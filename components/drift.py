"""The drift job as a pipeline step (a KFP component, and the CronJob's command on a cluster):
:func:`monitoring.drift.run_job` with the step's settings; its HTML report copied to the
step's output. Not enough data is a result (``compared: false``), not a failed run: a quiet
hour must not page anyone."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from components.runtime import say
from monitoring.drift import DriftOptions, NotEnoughData, run_job
from vigil.registry import Registry
from vigil.settings import Settings

STEP = "drift"


def drift_check(*, settings: Settings, current_window: str, reference: str,
                html_report: Path) -> dict[str, Any]:
    """Compare the inference log's ``current_window`` (empty: ``monitoring.drift_window``)
    with ``reference`` (empty: ``monitoring.drift_reference``); push to
    ``monitoring.pushgateway_url``."""
    mon = settings.monitoring
    name = settings.registry.model_name
    reference = reference or mon.drift_reference or ""
    if not reference:
        from vigil.errors import ConfigError

        raise ConfigError("drift: no reference (parameter reference or "
                          "monitoring.drift_reference)")
    options = DriftOptions(method=mon.drift_method, threshold=mon.drift_threshold,
                           drift_share=mon.drift_share, min_rows=mon.drift_min_rows,
                           key_gain_share=mon.drift_key_gain_share)
    try:
        run = run_job(
            model_name=name, log_root=settings.inference_log_root, reference=reference,
            options=options, out_root=settings.drift_out_dir,
            current_window=current_window or mon.drift_window,
            registry=Registry.from_settings(settings), pushgateway_url=mon.pushgateway_url,
        )
    except NotEnoughData as e:
        say(STEP, str(e))
        html_report.parent.mkdir(parents=True, exist_ok=True)
        html_report.write_text(f"<html><body><p>{e}</p></body></html>\n", encoding="utf-8")
        return {"compared": False, "reason": str(e), "current_rows": e.current_rows,
                "reference_rows": e.reference_rows}
    r = run.result
    say(STEP, f"{r.drifted_features}/{len(r.features)} features drifted "
              f"(share {r.drifted_share:.2f}); key features drifted: "
              f"{', '.join(r.drifted_key_features()) or 'none'}; score drift {r.score.score:.3f} "
              f"({'detected' if r.score.detected else 'not detected'})")
    html_report.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.html, html_report)
    return {"compared": True, **r.to_dict(), "report": str(run.html), "json": str(run.json)}
