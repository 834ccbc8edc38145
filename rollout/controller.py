"""The rollout controller: move traffic step by step, let Prometheus decide, promote or roll back.

A rollout of candidate version V against the version serving now (the primary):

1. **starting** — the target deploys V as the canary, with no traffic;
2. **shadow** (``--shadow`` only) — the canary sees a mirrored copy of all traffic for
   ``shadow_intervals`` analyses; clients only ever get the primary's answers;
3. **progressing** — for each step (``10, 25, 50, 100`` by default) the canary gets that share
   of the traffic for one interval, then an analysis (:mod:`rollout.analysis`) of that window
   decides: passed, the next step; failed, the same step again and one more failed analysis;
4. **promoting** — every step passed (or an operator said ``promote``): V becomes the registry's
   ``champion`` (the previous champion stays recorded for ``vigil models rollback``) and takes
   all traffic; then **promoted**;
5. **rolling_back** — ``threshold`` failed analyses (all steps together), a canary that could
   not start, a target error, or an operator's ``abort``: the canary's traffic goes to 0 and the
   canary is removed; the champion alias never moved; then **rolled_back**.

Every change is saved (:mod:`rollout.state`) before the next action and recorded in the history
with the values that decided it, and exported as metrics (:mod:`monitoring.rollout`, pushed to
the Pushgateway). One controller per model holds the lock; a controller that dies leaves the
state behind, and the next one continues from it (``vigil rollout <model> --version V`` again
resumes, ``abort`` rolls back, ``promote`` promotes).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from pydantic import ValidationError

from monitoring import rollout as metrics
from rollout import TARGETS, Say, quiet
from rollout.analysis import Analysis, Analyzer, Prometheus, bounds_from
from rollout.state import RolloutBusy, RolloutError, RolloutState, RolloutStore
from vigil.errors import VigilError
from vigil.registry import Registry
from vigil.settings import RolloutSettings, Settings

#: How often a waiting controller looks for an operator's request.
POLL_S: Final = 0.2



class Target(Protocol):
    """Where the traffic split lives (``rollout.local``, ``rollout.kserve``, ``rollout.helm``)."""

    @property
    def kind(self) -> str: ...

    @property
    def prometheus_url(self) -> str | None: ...

    @property
    def pushgateway_url(self) -> str | None: ...

    def params(self) -> dict[str, Any]: ...

    def serving_version(self) -> int | None: ...

    def selectors(self, primary_version: int | None,
                  canary_version: int) -> tuple[str, str]: ...

    def supports_shadow(self) -> bool: ...

    def prepare(self, version: int) -> None: ...

    def set_traffic(self, percent: int) -> None: ...

    def set_shadow(self, on: bool) -> None: ...

    def promote(self, version: int) -> None: ...

    def rollback(self, primary_version: int | None) -> None: ...


def make_target(settings: Settings, kind: str, params: Mapping[str, Any] | None = None,
                say: Say = quiet) -> Target:
    """The target ``kind`` (``params``: as recorded by an earlier rollout)."""
    if kind == "local":
        from rollout.local import LocalTarget

        return LocalTarget.create(settings, params, say)
    if kind == "kserve":
        from rollout.kserve import KServeTarget

        return KServeTarget.create(settings, params, say)
    if kind == "helm":
        from rollout.helm import HelmTarget

        return HelmTarget.create(settings, params, say)
    raise RolloutError(f"unknown rollout target {kind!r}; one of {', '.join(TARGETS)}")


@dataclasses.dataclass(frozen=True)
class RolloutRequest:
    """What ``vigil rollout <model> --version V ...`` asks for."""

    model_name: str
    version: int
    target: str
    steps: tuple[int, ...]
    interval_s: float
    threshold: int
    shadow: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, version: int, **overrides: Any) -> RolloutRequest:
        r = settings.rollout
        values: dict[str, Any] = {
            "model_name": settings.registry.model_name, "version": version,
            "target": r.target, "steps": r.steps, "interval_s": r.interval_s,
            "threshold": r.threshold, "shadow": False,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds of ``60s``, ``1.5m``, ``500ms``, ``2h`` or a plain number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise RolloutError(f"not a duration: {text!r} (e.g. 60s, 1.5m, 500ms)")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise RolloutError(f"a duration must be positive, got {text!r}")
    return seconds


def parse_steps(text: str | tuple[int, ...]) -> tuple[int, ...]:
    """``10,25,50,100`` (or a tuple) as checked percentages (the rules of
    ``rollout.steps``)."""
    try:
        return RolloutSettings.model_validate({"steps": text}).steps
    except ValidationError as e:
        raise RolloutError(e.errors()[0]["msg"].removeprefix("Value error, ")) from e


def store_for(settings: Settings, model_name: str | None = None) -> RolloutStore:
    return RolloutStore(settings.rollout_state_dir, model_name or settings.registry.model_name)


# ---------------------------------------------------------------------- entry points


def rollout(settings: Settings, request: RolloutRequest, say: Say = quiet, *,
            sleep: Callable[[float], None] = time.sleep) -> RolloutState:
    """Start the rollout ``request`` describes (or resume the interrupted rollout of the same
    version) and drive it to its end; returns the final state. Nothing changes when the
    request is refused (unknown version, another rollout in progress, ...)."""
    store = store_for(settings, request.model_name)
    registry = Registry.from_settings(settings)
    card = registry.get_card(request.model_name, version=request.version)  # unknown: error
    existing = store.load()
    if existing is not None and existing.active:
        if store.controller_running():
            raise RolloutBusy(
                f"version {existing.version} of {request.model_name!r} is being rolled out "
                f"(phase {existing.phase}, controller pid {store.controller_pid()}); "
                "`vigil rollout abort` stops it")
        if existing.version != request.version:
            raise RolloutError(
                f"the rollout of version {existing.version} was interrupted in phase "
                f"{existing.phase}: resume it with `vigil rollout {request.model_name} "
                f"--version {existing.version}` or roll it back with `vigil rollout abort`")
        say(f"resuming the interrupted rollout {existing.id} in phase {existing.phase} "
            f"(step {existing.step + 1}/{len(existing.steps)}, {existing.failed_analyses} "
            "failed analyses); its recorded plan applies")
        target = make_target(settings, existing.target["kind"], existing.target, say)
        return Controller(settings, store, existing, target, registry, say, sleep,
                          resumed=True).run()

    if request.target not in TARGETS:
        raise RolloutError(f"unknown rollout target {request.target!r}; one of "
                           f"{', '.join(TARGETS)}")
    _check_plan(request)
    target = make_target(settings, request.target, None, say)
    if request.shadow and not target.supports_shadow():
        raise RolloutError(f"shadow mode mirrors live traffic to the canary, which only the "
                           f"local target can do (HAProxy and the mirror); the {target.kind} "
                           "target's InferenceService has no mirroring")
    primary = target.serving_version()
    if primary == card.version:
        raise RolloutError(f"{card.label} already serves as the primary: nothing to roll out")
    prometheus = settings.rollout.prometheus_url or target.prometheus_url
    if not prometheus:
        raise RolloutError(f"the {target.kind} target needs Prometheus: set "
                           "rollout.prometheus_url (VIGIL_ROLLOUT__PROMETHEUS_URL)")
    now = datetime.now(UTC)
    state = RolloutState(
        id=f"{request.model_name}-v{request.version}-{now:%Y%m%dT%H%M%S%fZ}",
        model_name=request.model_name,
        version=request.version,
        primary_version=primary,
        target=target.params(),
        steps=list(request.steps),
        interval_s=request.interval_s,
        threshold=request.threshold,
        shadow=request.shadow,
        shadow_intervals=settings.rollout.shadow_intervals,
        bounds=bounds_from(settings.rollout),
        prometheus_url=prometheus,
        pushgateway_url=settings.rollout.pushgateway_url or target.pushgateway_url,
    )
    return Controller(settings, store, state, target, registry, say, sleep).run()


def _check_plan(request: RolloutRequest) -> None:
    parse_steps(request.steps)
    if request.interval_s <= 0:
        raise RolloutError(f"the interval must be positive, got {request.interval_s}")
    if request.threshold < 1:
        raise RolloutError(f"the threshold must be at least 1, got {request.threshold}")


def request_action(settings: Settings, action: str, say: Say = quiet, *,
                   model_name: str | None = None, wait_s: float = 600.0) -> RolloutState:
    """An operator's ``abort`` or ``promote`` of the rollout in progress. With a controller
    running, it is asked (and awaited up to ``wait_s``); without one (it died), this process
    takes over and carries the action out itself."""
    store = store_for(settings, model_name)
    state = store.load()
    if state is None or not state.active:
        last = "" if state is None else f" (the last one, {state.id}, is {state.phase})"
        raise RolloutError(f"no rollout of {store.model_name!r} is in progress{last}")
    if store.controller_running():
        store.request(action, state.id)
        say(f"asked the controller (pid {store.controller_pid()}) to {action} {state.id}")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            current = store.load()
            if current is not None and not current.active:
                return current
            if not store.controller_running():
                break  # it died meanwhile: take over below
            time.sleep(POLL_S)
        else:
            raise RolloutError(f"the controller did not finish the {action} within "
                               f"{wait_s:g} s; see `vigil rollout status`")
        state = store.load() or state
        if not state.active:
            return state
    say(f"no controller is running: carrying out the {action} of {state.id} here")
    target = make_target(settings, state.target["kind"], state.target, say)
    controller = Controller(settings, store, state, target, Registry.from_settings(settings),
                            say)
    return controller.run(action=action)


def status(settings: Settings, model_name: str | None = None) -> dict[str, Any]:
    """The current (or last) rollout, whether a controller drives it, its last analysis."""
    store = store_for(settings, model_name)
    state = store.load()
    running = store.controller_running()
    return {
        "model_name": store.model_name,
        "rollout": None if state is None else state.to_dict(),
        "controller_running": running,
        "controller_pid": store.controller_pid() if running else None,
        "unattended": state is not None and state.active and not running,
    }


def history(settings: Settings, model_name: str | None = None, *,
            everything: bool = False) -> list[dict[str, Any]]:
    """Recorded events of the current (or last) rollout, or of all rollouts."""
    store = store_for(settings, model_name)
    if everything:
        return store.events()
    state = store.load()
    return [] if state is None else store.events(state.id)


# ---------------------------------------------------------------------- the controller


class Controller:
    """Drives one rollout through its phases (see the module docstring)."""

    def __init__(self, settings: Settings, store: RolloutStore, state: RolloutState,
                 target: Target, registry: Registry, say: Say = quiet,
                 sleep: Callable[[float], None] = time.sleep, *, resumed: bool = False) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self.target = target
        self.registry = registry
        self.say = say
        self.sleep = sleep
        self.resumed = resumed
        primary_sel, canary_sel = target.selectors(state.primary_version, state.version)
        self.analyzer = Analyzer(
            Prometheus(state.prometheus_url, settings.rollout.query_timeout_s),
            state.model_name, primary_sel, canary_sel, state.bounds,
        )

    # ------------------------------------------------------------------ main loop

    def run(self, action: str | None = None) -> RolloutState:
        """Drive the rollout to its end (``action``: an operator's request to carry out
        first)."""
        s = self.state
        with self.store.controller_lock():
            self._publish()
            if self.resumed:
                self._record("resumed", f"resumed in phase {s.phase}")
            elif s.phase == "starting" and not self.store.events(s.id):
                self._record("started", f"rollout of version {s.version} against version "
                             f"{s.primary_version} on the {self.target.kind} target, steps "
                             f"{s.steps}, interval {s.interval_s:g} s, threshold {s.threshold}",
                             target=s.target, bounds=s.bounds)
                self.say(f"rollout {s.id}: version {s.version} against version "
                         f"{s.primary_version}, steps {s.steps}% every {s.interval_s:g} s, "
                         f"{s.threshold} failed analyses roll back")
            if action is not None:
                self._apply(action)
            while s.active:
                if s.phase == "starting":
                    self._start()
                elif s.phase == "shadow":
                    self._shadow()
                elif s.phase == "progressing":
                    self._progress()
                elif s.phase == "promoting":
                    self._promote()
                elif s.phase == "rolling_back":
                    self._roll_back()
            return s

    def _start(self) -> None:
        s = self.state
        try:
            self.target.prepare(s.version)
        except VigilError as e:
            self._to_rollback(f"the canary could not start: {e}")
            return
        self._record("canary_ready", f"canary version {s.version} ready, no traffic yet")
        if s.shadow and s.shadow_passed < s.shadow_intervals:
            self._set_phase("shadow")
        else:
            self._set_phase("progressing")

    def _shadow(self) -> None:
        s = self.state
        try:
            self.target.set_shadow(True)
        except VigilError as e:
            self._to_rollback(f"cannot mirror traffic to the canary: {e}")
            return
        self.say(f"shadow {s.shadow_passed + 1}/{s.shadow_intervals}: the canary sees a copy "
                 f"of the traffic for {s.interval_s:g} s")
        if self._wait(s.interval_s):
            return
        analysis = self.analyzer.analyze(s.interval_s, shadow=True)
        if self._judge(analysis, "shadow"):
            s.shadow_passed += 1
            if s.shadow_passed >= s.shadow_intervals:
                try:
                    self.target.set_shadow(False)
                except VigilError as e:
                    self._to_rollback(f"cannot stop mirroring: {e}")
                    return
                self._set_phase("progressing")
            else:
                self.store.save(s)

    def _progress(self) -> None:
        s = self.state
        percent = s.steps[s.step]
        if s.traffic_percent != percent or self.resumed:
            self.resumed = False
            try:
                self.target.set_traffic(percent)
            except VigilError as e:
                self._to_rollback(f"cannot set the canary's traffic to {percent}%: {e}")
                return
            s.traffic_percent = percent
            self.store.save(s)
            self._record("traffic", f"canary at {percent}% (step {s.step + 1}/{len(s.steps)})")
            self._publish()
        self.say(f"step {s.step + 1}/{len(s.steps)}: {percent}% of the traffic to version "
                 f"{s.version} for {s.interval_s:g} s")
        if self._wait(s.interval_s):
            return
        analysis = self.analyzer.analyze(s.interval_s,
                                         baseline_s=time.time() - s.started_at)
        if self._judge(analysis, f"step {s.step + 1}"):
            s.step += 1
            if s.step >= len(s.steps):
                s.step = len(s.steps) - 1
                s.reason = f"all {len(s.steps)} steps passed their analysis"
                self._set_phase("promoting")
            else:
                self.store.save(s)

    def _judge(self, analysis: Analysis, where: str) -> bool:
        """Record an analysis; count a failure and turn to rollback at the threshold."""
        s = self.state
        s.last_analysis = analysis.to_dict()
        metrics.count_checks(s.model_name, [(c.name, c.passed) for c in analysis.checks])
        if analysis.passed:
            self.store.save(s)
            self._record("analysis", f"{where}: passed", passed=True,
                         analysis=analysis.to_dict())
            self.say(f"  analysis passed ({self._values(analysis)})")
            self._publish()
            return True
        s.failed_analyses += 1
        self.store.save(s)
        self._record("analysis", f"{where}: failed ({s.failed_analyses}/{s.threshold}): "
                     f"{analysis.summary()}", passed=False, analysis=analysis.to_dict())
        self.say(f"  analysis failed ({s.failed_analyses}/{s.threshold}): {analysis.summary()}")
        if s.failed_analyses >= s.threshold:
            self._to_rollback(f"{s.failed_analyses} failed analyses (threshold {s.threshold}); "
                              f"last: {analysis.summary()}")
        else:
            self._publish()
        return False

    @staticmethod
    def _values(analysis: Analysis) -> str:
        shown = {c.name: c.value for c in analysis.checks if c.value is not None}
        return ", ".join(f"{k} {v:.4g}" for k, v in shown.items())

    def _promote(self) -> None:
        s = self.state
        card = self.registry.promote(s.model_name, s.version)
        self._record("champion", f"{card.label} is the champion (previous: "
                     f"{s.primary_version})")
        self.target.promote(s.version)
        s.traffic_percent = 100
        self._set_phase("promoted")
        self._record("promoted", s.reason)
        self.say(f"promoted: version {s.version} is the champion and takes all traffic "
                 f"({s.reason})")

    def _roll_back(self) -> None:
        """Traffic to 0 first (the moment clients stop reaching the canary is recorded), then
        the target removes the canary."""
        s = self.state
        if s.traffic_percent != 0:
            try:
                self.target.set_traffic(0)
            except VigilError as e:
                self._record("error", f"cannot set the canary's traffic to 0: {e}; removing "
                             "the canary")
            else:
                s.traffic_percent = 0
                self.store.save(s)
                self._record("traffic", "canary at 0%")
                self._publish()
        self.target.rollback(s.primary_version)
        s.traffic_percent = 0
        self._set_phase("rolled_back")
        self._record("rolled_back", s.reason)
        self.say(f"rolled back: version {s.primary_version} takes all traffic again; the "
                 f"champion did not change ({s.reason})")

    def _to_rollback(self, reason: str) -> None:
        self.state.reason = reason
        self._set_phase("rolling_back")

    # ------------------------------------------------------------------ requests and waits

    def _wait(self, seconds: float) -> bool:
        """Wait ``seconds``, watching for an operator's request; True when one arrived (and
        the phase changed)."""
        deadline = time.monotonic() + seconds
        while True:
            action = self.store.take_request(self.state.id)
            if action is not None:
                self._apply(action)
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sleep(min(POLL_S, left))

    def _apply(self, action: str) -> None:
        s = self.state
        self._record("request", f"operator requested {action}")
        if action == "abort":
            self.say("abort requested: rolling back")
            self._to_rollback("aborted by an operator")
        elif action == "promote":
            if s.phase in ("rolling_back",):
                raise RolloutError(f"rollout {s.id} is rolling back; it cannot be promoted")
            self.say("promotion requested: promoting without further analysis")
            s.reason = "promoted by an operator"
            self._set_phase("promoting")
        else:
            raise RolloutError(f"unknown request {action!r}")

    # ------------------------------------------------------------------ records and metrics

    def _set_phase(self, phase: str) -> None:
        self.state.phase = phase
        self.store.save(self.state)
        self._publish()

    def _record(self, event: str, message: str = "", **fields: Any) -> None:
        self.store.append(self.state, event, message, **fields)

    def _publish(self) -> None:
        s = self.state
        metrics.set_state(
            s.model_name, phase=s.phase, traffic_percent=s.traffic_percent,
            failed_analyses=s.failed_analyses, primary_version=s.primary_version,
            canary_version=s.version, target=str(s.target.get("kind")),
        )
        metrics.push(s.pushgateway_url, s.model_name)
