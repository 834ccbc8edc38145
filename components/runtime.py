"""What every step shares at run time: settings, progress lines and structured events.

A step prints two kinds of lines to stdout, which KFP shows as the step's log and
``kfp.local`` relays to the process that runs the pipeline:

* ``[vigil] <step>: <message>`` — progress for people;
* ``::vigil-event:: {json}`` — machine-readable facts (a step's duration, or the typed error that
  stopped it), so that a local run can report "validation failed: ..." instead of a traceback.

Nothing here imports Kubeflow; the adapters in :mod:`components.kfp_components` call these.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from vigil.errors import VigilError
from vigil.settings import Settings, load_settings, with_overrides

PROGRESS_PREFIX: Final = "[vigil]"
EVENT_PREFIX: Final = "::vigil-event::"


def say(step: str, message: str) -> None:
    """One progress line for people."""
    print(f"{PROGRESS_PREFIX} {step}: {message}", file=sys.stdout, flush=True)


def emit(step: str, event: str, **fields: Any) -> None:
    """One machine-readable event line."""
    payload = {"step": step, "event": event, **fields}
    print(f"{EVENT_PREFIX} {json.dumps(payload, default=str)}", file=sys.stdout, flush=True)


def parse_event(line: str) -> dict[str, Any] | None:
    """The event carried by ``line``, or None when it is not an event line."""
    text = line.strip()
    if not text.startswith(EVENT_PREFIX):
        return None
    try:
        payload = json.loads(text[len(EVENT_PREFIX):])
    except json.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


@contextmanager
def step(name: str) -> Iterator[None]:
    """Time a step's work; a :class:`VigilError` leaving it is announced as an event (with its
    class name and message) before it propagates and fails the step."""
    t0 = time.perf_counter()
    emit(name, "started")
    try:
        yield
    except VigilError as e:
        emit(name, "error", error=type(e).__name__, message=str(e),
             seconds=round(time.perf_counter() - t0, 3))
        raise
    emit(name, "finished", seconds=round(time.perf_counter() - t0, 3))


def step_settings(vigil_home: str = "", vigil_config: str = "", model_name: str = "") -> Settings:
    """The settings a step runs with: ``vigil_config`` (else ``$VIGIL_CONFIG`` / ``./vigil.yaml``
    / defaults, with environment overrides), then the pipeline's ``vigil_home`` and
    ``model_name`` parameters when they are not empty. The parameters win over the environment
    too: the image sets ``VIGIL_HOME`` (its volume), a run's ``vigil_home`` names another."""
    settings = load_settings(vigil_config or None)
    if model_name:
        settings = with_overrides(settings, "pipeline parameters",
                                  registry={"model_name": model_name})
    if vigil_home:
        settings = settings.model_copy(update={"home": Path(vigil_home)})
    return settings
