"""Run the ``fraud-training`` pipeline on this machine, through ``kfp.local``.

:func:`run_local` calls the same pipeline function that is compiled for the cluster, with
``kfp.local.SubprocessRunner(use_venv=False)``: every step runs as a subprocess of this Python
environment, where Vigil is installed (the cluster runs them in the component image). Outputs
land under ``pipeline_root`` (default ``<home>/pipeline_runs``). Local runs have no caching
and no retries. For the run's duration the environment the steps inherit holds every field of
the given settings (``VIGIL_HOME``, ``VIGIL_REDIS__URL``, ...; :func:`step_environment`) and
``OMP_WAIT_POLICY=PASSIVE`` (unless set), so LightGBM does not spin against other processes.

While the pipeline runs, the output of ``kfp.local`` and of the steps is read line by line:
a step starts at kfp's ``Executing task 'name'`` and ends at its ``finished with status``
line; ``[vigil]`` lines are the steps' own progress; ``::vigil-event::`` lines carry the typed
error that stopped a step (see :mod:`components.runtime`). Progress goes to a callback
(:func:`print_progress` by default), everything else is hidden unless ``log_stream`` is given.

A failed step raises the error it raised, by class, when it is a :class:`VigilError` (so a
validation failure is :class:`ValidationFailed`, exit code 1 in the CLI), otherwise
:class:`PipelineFailed` with the end of the step's log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO

from components.results import Evaluation, Registration
from components.runtime import PROGRESS_PREFIX, parse_event
from vigil import errors
from vigil.data.simulate import SimulationConfig, simulate, write_daily
from vigil.errors import VigilError
from vigil.evaluation.metrics import METRICS
from vigil.settings import Settings, settings_env

if TYPE_CHECKING:
    from pipelines.params import FraudTrainingParams

#: The steps of one run, in order; the last is ``register`` or ``not-registered``.
STEPS: Final = ("validate", "featurize", "train", "evaluate", "register", "deploy")
LAST_STEPS: Final = ("register", "not-registered")
PIPELINE_RUNS_DIR: Final = "pipeline_runs"
#: Lines of a failed step's log quoted in :class:`PipelineFailed`.
TAIL_LINES: Final = 25
#: ``--simulate``: small but with every fraud scenario; a local run takes about a minute.
DEMO_SIMULATION: Final = SimulationConfig(n_customers=1_000, n_terminals=2_000, n_days=60, seed=0)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '(?P<task>[^']+)'")
_TASK_END = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)")


class PipelineFailed(VigilError):
    """A pipeline step failed with an error that is not one of Vigil's typed errors."""

    def __init__(self, message: str, step: str | None = None):
        super().__init__(message)
        self.step = step


@dataclasses.dataclass(frozen=True)
class StepEvent:
    """Progress of one step: ``start``, a ``message`` it printed, or its ``end``."""

    kind: Literal["start", "message", "end"]
    step: str
    index: int
    total: int
    message: str = ""
    #: Wall-clock seconds of the step (subprocess start to exit), on ``end``.
    seconds: float | None = None
    #: ``SUCCESS`` or ``FAILURE``, on ``end``.
    status: str | None = None


@dataclasses.dataclass(frozen=True)
class StepTiming:
    name: str
    status: str
    #: Wall clock, interpreter start and imports included.
    seconds: float
    #: The step function's own time, when the step reported it.
    work_seconds: float | None


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a local run did: the evaluation, the registration and the steps' times."""

    pipeline: str
    transactions: str
    evaluation: Evaluation
    registration: Registration
    steps: tuple[StepTiming, ...]
    seconds: float
    pipeline_root: Path

    @property
    def registered(self) -> bool:
        return self.registration.registered

    @property
    def report_html(self) -> Path:
        return Path(self.evaluation.report_uri) / "report.html"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "transactions": self.transactions,
            "evaluation": self.evaluation.to_dict(),
            "registration": self.registration.to_dict(),
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "seconds": self.seconds,
            "pipeline_root": str(self.pipeline_root),
        }

    def headline(self) -> str:
        reg = self.registration
        if reg.registered:
            outcome = f"{reg.model_name} version {reg.version} registered as {reg.alias}"
        else:
            champion = self.evaluation.champion
            kept = f"champion version {champion.version} unchanged" if champion else "no champion"
            outcome = f"nothing registered ({reg.model_name}: {kept})"
        return f"{self.pipeline} finished in {self.seconds:.1f} s: {outcome}"

    def to_text(self) -> str:
        """The summary printed at the end of ``vigil run fraud --local``."""
        ev = self.evaluation
        data, tx = ev.data, ev.data.transactions
        champion = ev.champion
        lines = [
            self.headline(),
            f"  reason      {self.registration.reason}",
            f"  data        {data.source}: {tx.rows:,} transactions ({tx.frauds:,} frauds), "
            f"{tx.first_day} .. {tx.last_day}",
            f"  windows     {data.windows.describe()}",
            f"  test set    {ev.test_rows:,} transactions, {ev.test_frauds:,} frauds "
            f"({ev.dropped_known_compromised:,} of cards known compromised removed)",
            f"  metrics     {'':24}{'candidate':>10}"
            + (f"{'champion v' + str(champion.version):>16}" if champion else "  (no champion)"),
        ]
        for key in METRICS:
            mark = " *" if key == ev.comparison_metric else "  "
            row = f"    {key + mark:<32}{ev.metrics[key]:>10.4f}"
            if champion is not None:
                row += f"{champion.metrics[key]:>16.4f}"
            lines.append(row)
        lines += [
            f"              * compared; quality floor {ev.quality_floor:.4f}"
            + (f", min improvement {ev.min_improvement:.4f}" if ev.min_improvement else ""),
            f"  threshold   {ev.threshold:.4g} (best F1 on the validation slice)",
            f"  report      {self.report_html}",
            "  steps       " + ", ".join(
                f"{s.name} {s.seconds:.1f} s" + ("" if s.status == "SUCCESS" else f" {s.status}")
                for s in self.steps
            ),
        ]
        return "\n".join(lines)


def print_progress(stream: TextIO | None = None) -> Callable[[StepEvent], None]:
    """A progress callback printing one line per step start, message and end."""

    def show(event: StepEvent) -> None:
        out = stream or sys.stderr
        where = f"[{event.index}/{event.total}] {event.step}"
        if event.kind == "start":
            print(f"{where} ...", file=out, flush=True)
        elif event.kind == "message":
            print(f"      {event.message}", file=out, flush=True)
        else:
            verdict = "done" if event.status == "SUCCESS" else event.status or "?"
            print(f"{where} {verdict} in {event.seconds or 0.0:.1f} s", file=out, flush=True)

    return show


# ------------------------------------------------------------------------------ running


def simulate_demo_data(
    settings: Settings, config: SimulationConfig = DEMO_SIMULATION
) -> tuple[Path, dict[str, object]]:
    """Simulate ``config`` into ``<home>/simulated/fraud`` (daily parquet files, replacing
    earlier ones) for ``vigil run fraud --local --simulate``; returns the folder and the
    simulation's statistics."""
    out = settings.home.resolve() / "simulated" / "fraud"
    if out.exists():
        for old in out.glob("*.parquet"):
            old.unlink()
    sim = simulate(config)
    write_daily(sim.transactions, out, config.start_date, config.n_days)
    return out, sim.statistics()


def run_local(
    params: FraudTrainingParams,
    *,
    settings: Settings,
    pipeline_root: Path | None = None,
    progress: Callable[[StepEvent], None] | None = None,
    log_stream: TextIO | None = None,
) -> RunSummary:
    """Run ``fraud-training`` with ``params`` on this machine and return its summary.

    The steps run with exactly ``settings``: every field reaches them as a ``VIGIL_*``
    environment variable (:func:`step_environment`), which outranks any settings file they
    might find; ``vigil_home`` and ``model_name`` of ``params`` are replaced. ``progress``
    receives :class:`StepEvent` s (default: :func:`print_progress` on stderr); ``log_stream``
    receives kfp's and the steps' full output (default: hidden).
    """
    from kfp import local

    from pipelines.fraud_training import PIPELINE_NAME, fraud_training

    home = settings.home.resolve()
    env = step_environment(settings)
    params = dataclasses.replace(
        params, vigil_home=str(home), vigil_config="", model_name=settings.registry.model_name
    )
    root = (pipeline_root or home / PIPELINE_RUNS_DIR).resolve()
    root.mkdir(parents=True, exist_ok=True)
    total = len(STEPS) if params.rollout_target != "none" else len(STEPS) - 1
    tracker = _Tracker(progress or print_progress(), total=total)
    t0 = time.perf_counter()
    with _environment(env), _quiet_root_logger(log_stream is None), warnings.catch_warnings():
        # kfp.local warns when an image name lacks "python"; the subprocess runner ignores
        # images anyway (the steps run in this environment).
        warnings.filterwarnings("ignore", message=r"You may be attemping", category=RuntimeWarning)
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(root),
            raise_on_error=False,
        )
        tap = _Tap(tracker, log_stream)
        with contextlib.redirect_stdout(tap):
            task = fraud_training(**params.arguments())
        tap.close_line()
    seconds = time.perf_counter() - t0
    outputs: Mapping[str, Any] = task.outputs
    if "evaluation" not in outputs or "registration" not in outputs:
        raise tracker.failure()
    return RunSummary(
        pipeline=PIPELINE_NAME,
        transactions=str(params.transactions),
        evaluation=Evaluation.from_json(str(outputs["evaluation"])),
        registration=Registration.from_json(str(outputs["registration"])),
        steps=tracker.timings(),
        seconds=round(seconds, 2),
        pipeline_root=root,
    )


def step_environment(settings: Settings) -> dict[str, str]:
    """Environment for the step subprocesses, so that they load exactly ``settings`` (home
    and tracking URI made absolute: the steps run in other working directories)."""
    resolved = settings.model_copy(
        update={
            "home": settings.home.resolve(),
            "registry": settings.registry.model_copy(
                update={"tracking_uri": settings.tracking_uri}
            ),
        }
    )
    env = settings_env(resolved)
    # Idle OpenMP threads yield instead of spinning: with other processes on the machine,
    # spinning makes LightGBM several times slower (measured 10x on 2 busy cores).
    env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    return env


@contextlib.contextmanager
def _quiet_root_logger(quiet: bool) -> Iterator[None]:
    """Hide kfp.local's INFO lines logged outside its own logging context (skipped branches,
    workspace clean-up) unless the full log was asked for."""
    root = logging.getLogger()
    level = root.level
    if quiet:
        root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a run (subprocesses inherit them)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ------------------------------------------------------------------------------ progress


@dataclasses.dataclass
class _Step:
    name: str
    index: int
    started: float
    ended: float | None = None
    status: str | None = None
    work_seconds: float | None = None
    error: dict[str, Any] | None = None
    tail: deque[str] = dataclasses.field(default_factory=lambda: deque(maxlen=TAIL_LINES))


class _Tracker:
    """Turns the lines of a local run into step events, timings and errors."""

    def __init__(
        self,
        progress: Callable[[StepEvent], None],
        clock: Callable[[], float] = time.perf_counter,
        total: int = len(STEPS) - 1,
    ) -> None:
        self._progress = progress
        self._clock = clock
        #: Steps the run will show (default: all but ``deploy``, which only runs with a
        #: rollout target).
        self._total = total
        self._steps: dict[str, _Step] = {}
        self._current: _Step | None = None

    def line(self, raw: str) -> None:
        line = _ANSI.sub("", raw)
        if (match := _TASK_START.search(line)) is not None:
            self._start(match["task"])
        elif (match := _TASK_END.search(line)) is not None:
            self._end(match["task"], match["status"])
        elif (event := parse_event(line)) is not None:
            self._event(event)
        elif self._current is not None:
            text = line.strip()
            if text.startswith(PROGRESS_PREFIX):
                message = text[len(PROGRESS_PREFIX):].strip()
                prefix = f"{self._current.name}: "
                message = message[len(prefix):] if message.startswith(prefix) else message
                self._emit("message", self._current, message=message)
            if text:
                self._current.tail.append(text)

    def _start(self, name: str) -> None:
        index = STEPS.index(name) + 1 if name in STEPS else STEPS.index("register") + 1
        step = _Step(name=name, index=index, started=self._clock())
        self._steps[name] = step
        self._current = step
        self._emit("start", step)

    def _end(self, name: str, status: str) -> None:
        step = self._steps.get(name)
        if step is None:
            return
        step.ended, step.status = self._clock(), status
        self._emit("end", step, seconds=step.ended - step.started, status=status)
        self._current = None

    def _event(self, event: dict[str, Any]) -> None:
        step = self._steps.get(str(event.get("step"))) or self._current
        if step is None:
            return
        if event.get("event") == "finished" and isinstance(event.get("seconds"), (int, float)):
            step.work_seconds = float(event["seconds"])
        elif event.get("event") == "error":
            step.error = event

    def _emit(self, kind: Literal["start", "message", "end"], step: _Step, *,
              message: str = "", seconds: float | None = None, status: str | None = None) -> None:
        self._progress(StepEvent(kind, step.name, step.index, self._total, message, seconds,
                                 status))

    def timings(self) -> tuple[StepTiming, ...]:
        return tuple(
            StepTiming(
                name=s.name,
                status=s.status or "UNFINISHED",
                seconds=round((s.ended or self._clock()) - s.started, 2),
                work_seconds=s.work_seconds,
            )
            for s in self._steps.values()
        )

    def failure(self) -> VigilError:
        """The error to raise for a run that produced no outputs."""
        failed = [s for s in self._steps.values() if s.status != "SUCCESS"]
        if not failed:
            return PipelineFailed(
                "the pipeline produced no outputs and no step reported a failure; "
                "rerun with -v to see kfp's log"
            )
        step = failed[0]
        if step.error is not None:
            cls = getattr(errors, str(step.error.get("error")), None)
            text = str(step.error.get("message", ""))
            if cls is errors.ValidationFailed:
                return errors.ValidationFailed(text)  # the CLI says "validation failed: ..."
            if isinstance(cls, type) and issubclass(cls, VigilError):
                return cls(f"{step.name}: {text}")
            return PipelineFailed(f"{step.name}: {text}", step.name)
        tail = "\n".join(f"    {line}" for line in step.tail)
        return PipelineFailed(f"step {step.name} failed; the end of its log:\n{tail}", step.name)


class _Tap(io.TextIOBase):
    """A text stream that hands complete lines to a tracker and optionally echoes them."""

    def __init__(self, tracker: _Tracker, echo: TextIO | None) -> None:
        super().__init__()
        self._tracker = tracker
        self._echo = echo
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._echo is not None:
            self._echo.write(text)
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._tracker.line(line)
        return len(text)

    def flush(self) -> None:
        if self._echo is not None:
            self._echo.flush()

    def close_line(self) -> None:
        if self._buffer:
            self._tracker.line(self._buffer)
            self._buffer = ""
