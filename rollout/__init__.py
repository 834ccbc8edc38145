"""Canary rollouts that decide by themselves: metric-driven promotion and automatic rollback.

:mod:`rollout.controller` moves a candidate's share of the traffic step by step and lets
:mod:`rollout.analysis` (Prometheus queries, canary against primary) decide each step; the
outcome, every decision and the values behind it are recorded by :mod:`rollout.state`. The
traffic split lives in a target: :mod:`rollout.local` (HAProxy in front of two ``vigil serve``
processes, with Prometheus: the local rollout stack), :mod:`rollout.kserve` (patches of the
InferenceService) or :mod:`rollout.helm` (``helm upgrade`` of Vigil's chart). Shadow mode's
mirror is :mod:`rollout.mirror`; :mod:`rollout.traffic` sends keep-alive traffic and counts who
answered (benchmarks, tests, trying the stack out).
"""

from collections.abc import Callable
from typing import Final

#: Progress output: one line for people (the CLI echoes it, a pipeline step logs it).
Say = Callable[[str], None]


def quiet(_: str) -> None:
    """No progress output (the default :data:`Say`)."""


#: Where a rollout's traffic split lives.
TARGETS: Final = ("local", "kserve", "helm")
#: The pipeline's deploy step also accepts ``none``: register only, roll nothing out.
NO_ROLLOUT: Final = "none"
