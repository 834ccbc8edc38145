"""The durable record of rollouts: current state, history, controller lock, operator requests.

One folder per model under the state directory (``rollout.state_dir``, default
``<home>/rollouts``)::

    <model>/state.json       the current (or last) rollout, rewritten atomically at each change
    <model>/history.jsonl    one JSON event per line, appended and fsynced: every traffic change,
                             every analysis with the metric values that decided it, the outcome
    <model>/controller.lock  held (flock) by the controller driving the rollout; the kernel
                             releases it when that process dies, however it dies
    <model>/request.json     an operator's ``abort`` or ``promote``, taken by the controller

A controller killed mid-rollout leaves ``state.json`` in an active phase and the lock free:
the next controller (``vigil rollout <model> --version V`` again, ``abort`` or ``promote``)
takes the lock and continues from the recorded phase, step and failed-analysis count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from vigil.errors import VigilError

STATE_FILE: Final = "state.json"
HISTORY_FILE: Final = "history.jsonl"
LOCK_FILE: Final = "controller.lock"
REQUEST_FILE: Final = "request.json"

#: Phases in which a rollout still needs a controller (see ``monitoring.rollout.PHASES``).
ACTIVE_PHASES: Final = frozenset({"starting", "shadow", "progressing", "promoting",
                                  "rolling_back"})
FINAL_PHASES: Final = frozenset({"promoted", "rolled_back"})
ACTIONS: Final = ("abort", "promote")


class RolloutError(VigilError):
    """A rollout cannot start or continue (bad request, busy, target failure)."""


class RolloutBusy(RolloutError):
    """Another controller is driving this model's rollout."""


@dataclasses.dataclass
class RolloutState:
    """A rollout, as recorded. Mutable: the controller updates it and saves it."""

    id: str
    model_name: str
    #: The candidate.
    version: int
    #: What served before the rollout (None: unknown to the target).
    primary_version: int | None
    #: The target's kind and parameters (``{"kind": "local"}``, ``{"kind": "kserve", ...}``).
    target: dict[str, Any]
    steps: list[int]
    interval_s: float
    threshold: int
    shadow: bool
    shadow_intervals: int
    #: Analysis bounds in force (fields of ``RolloutSettings``), fixed at start.
    bounds: dict[str, float]
    prometheus_url: str
    pushgateway_url: str | None
    phase: str = "starting"
    #: Index into ``steps`` of the current step.
    step: int = 0
    shadow_passed: int = 0
    traffic_percent: int = 0
    failed_analyses: int = 0
    started_at: float = dataclasses.field(default_factory=time.time)
    updated_at: float = dataclasses.field(default_factory=time.time)
    #: Why the rollout ended (or is ending) the way it did.
    reason: str = ""
    last_analysis: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RolloutError(f"rollout state has unknown fields {unknown}")
        try:
            return cls(**dict(data))
        except TypeError as e:
            raise RolloutError(f"rollout state is incomplete: {e}") from e


class RolloutStore:
    """The files of one model's rollouts (see the module docstring)."""

    def __init__(self, root: Path, model_name: str) -> None:
        self.dir = Path(root) / model_name
        self.model_name = model_name

    # ------------------------------------------------------------------ state

    def load(self) -> RolloutState | None:
        path = self.dir / STATE_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RolloutError(f"cannot read {path}: {e.strerror}") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RolloutError(f"{path} is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise RolloutError(f"{path} must hold a JSON object")
        return RolloutState.from_dict(data)

    def save(self, state: RolloutState) -> None:
        state.updated_at = time.time()
        write_atomic(self.dir / STATE_FILE, json.dumps(state.to_dict(), indent=2) + "\n")

    # ------------------------------------------------------------------ history

    def append(self, state: RolloutState, event: str, message: str = "",
               **fields: Any) -> dict[str, Any]:
        """Record an event of ``state``'s rollout (with its phase, traffic and failed count)."""
        record = {
            "time": round(time.time(), 3),
            "rollout_id": state.id,
            "event": event,
            "version": state.version,
            "phase": state.phase,
            "traffic_percent": state.traffic_percent,
            "failed_analyses": state.failed_analyses,
            "message": message,
            **fields,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        fd = os.open(self.dir / HISTORY_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return record

    def events(self, rollout_id: str | None = None) -> list[dict[str, Any]]:
        """Recorded events, oldest first (of one rollout when ``rollout_id`` is given). A line
        cut short by a crash while it was written is skipped."""
        path = self.dir / HISTORY_FILE
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and (rollout_id is None or
                                            event.get("rollout_id") == rollout_id):
                out.append(event)
        return out

    # ------------------------------------------------------------------ controller lock

    @contextlib.contextmanager
    def controller_lock(self) -> Iterator[None]:
        """Hold the controller lock for the block; :class:`RolloutBusy` when another process
        (or another holder in this one) has it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                holder = self.controller_pid()
                raise RolloutBusy(
                    f"a controller{f' (pid {holder})' if holder else ''} is driving the "
                    f"rollout of model {self.model_name!r}"
                ) from e
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def controller_running(self) -> bool:
        """Whether a live process holds the controller lock."""
        path = self.dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def controller_pid(self) -> int | None:
        try:
            text = (self.dir / LOCK_FILE).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    # ------------------------------------------------------------------ requests

    def request(self, action: str, rollout_id: str) -> None:
        if action not in ACTIONS:
            raise RolloutError(f"unknown request {action!r}; one of {', '.join(ACTIONS)}")
        write_atomic(self.dir / REQUEST_FILE, json.dumps(
            {"action": action, "rollout_id": rollout_id, "time": time.time()}) + "\n")

    def take_request(self, rollout_id: str) -> str | None:
        """The pending operator request for this rollout, removed; None when there is none.
        A request meant for another (earlier) rollout is discarded."""
        path = self.dir / REQUEST_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            data = {}
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if not isinstance(data, dict) or data.get("rollout_id") != rollout_id:
            return None
        action = data.get("action")
        return str(action) if action in ACTIONS else None


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader (or a crash) sees the old or the new
    content, never a mix: write a temporary file, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
