"""Step 6, deploy: a registered challenger is rolled out on the configured target.

Runs after ``register`` when the pipeline's ``rollout_target`` is not ``none`` (``none``, the
default, keeps the pipeline's behaviour from before: register and stop). A challenger is rolled
out with the settings' rollout plan (``rollout.steps``, ``interval_s``, ``threshold``) and the
step waits for the outcome: promoted (the challenger is the new champion) or rolled back (the
champion stays). A rollback is a result, not a failure of the run. A first champion has no
primary to be compared with, and nothing is rolled out.
"""

from __future__ import annotations

from typing import Final

from components.results import Deployment, Registration
from components.runtime import say
from rollout import NO_ROLLOUT, TARGETS
from rollout.controller import RolloutRequest, rollout
from vigil.errors import ConfigError
from vigil.registry import CHALLENGER
from vigil.settings import Settings

STEP = "deploy"
DEPLOY_TARGETS: Final = (NO_ROLLOUT, *TARGETS)


def deploy_candidate(registration: Registration, *, settings: Settings,
                     target: str) -> Deployment:
    """Roll the registered challenger out on ``target`` (see the module docstring)."""
    if target not in DEPLOY_TARGETS:
        raise ConfigError(f"deploy: rollout target must be one of {', '.join(DEPLOY_TARGETS)}, "
                          f"got {target!r}")
    if target == NO_ROLLOUT:
        return _skipped(registration, target, "rollout target none: registered only")
    if not registration.registered or registration.version is None:
        return _skipped(registration, target, f"nothing registered ({registration.reason})")
    if registration.alias != CHALLENGER:
        return _skipped(registration, target, f"version {registration.version} is the first "
                        "champion: there is no primary to roll out against")
    request = RolloutRequest.from_settings(settings, registration.version, target=target)
    final = rollout(settings, request, lambda message: say(STEP, message))
    say(STEP, f"rollout {final.id}: {final.phase} ({final.reason})")
    return Deployment(rolled_out=True, target=target, version=registration.version,
                      phase=final.phase, rollout_id=final.id, reason=final.reason)


def _skipped(registration: Registration, target: str, reason: str) -> Deployment:
    say(STEP, reason)
    return Deployment(rolled_out=False, target=target, version=registration.version,
                      phase=None, rollout_id=None, reason=reason)
