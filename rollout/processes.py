"""Processes that outlive the command that started them, stopped later by PID.

The local rollout stack (HAProxy, Prometheus, the Pushgateway, model servers, the mirror) keeps
running after ``vigil rollout stack up`` returns, and a canary started by one controller must be
found again by the next one after a crash. Each process is recorded as its PID *and* its start
time (``/proc/<pid>/stat``, clock ticks since boot), so a PID the kernel has since given to
another process is never signalled. Linux only (like the rest of the local stack).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vigil.errors import VigilError

#: Popen objects of the processes this process started (kept so they are reaped, not warned
#: about, when they exit).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ProcessError(VigilError):
    """A process of the rollout stack could not be started or stopped."""


@dataclasses.dataclass(frozen=True)
class Proc:
    """A process this machine runs: its PID, start time and log file."""

    pid: int
    started: int
    log: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proc:
        return cls(pid=int(data["pid"]), started=int(data["started"]), log=str(data["log"]))

    def alive(self) -> bool:
        """Running (not a zombie) and still the process that was started."""
        _reap(self.pid)
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and int(stat[19]) == self.started

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (graceful), then SIGKILL after ``timeout_s``; nothing if already gone."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                return
            time.sleep(0.05)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _reap(pid: int) -> None:
    """Collect the exit status of our own child, so that it does not linger as a zombie."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def spawn(
    command: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start ``command`` in a session of its own (it survives this process), output to
    ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log, "ab") as out:
            process = subprocess.Popen(
                list(command), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            )
    except OSError as e:
        raise ProcessError(f"cannot start {command[0]}: {e}") from e
    _CHILDREN[process.pid] = process
    stat = _stat(process.pid)
    if stat is None:
        raise ProcessError(f"{command[0]} exited at once; see {log}")
    return Proc(pid=process.pid, started=int(stat[19]), log=str(log))
