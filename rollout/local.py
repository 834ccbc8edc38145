"""The local rollout stack and the ``local`` target: real servers, real HAProxy, real Prometheus.

``vigil rollout stack up`` starts, on 127.0.0.1:

* the **primary**: ``vigil serve <model> --version <champion>`` in slot ``a``;
* **HAProxy** (:mod:`rollout.haproxy`) in front of slots ``a`` and ``b`` on
  ``rollout.local.port``: clients call the model there;
* **Prometheus** scraping both slots (scrape label ``rollout_slot``), the mirror and the
  Pushgateway every ``rollout.local.scrape_interval_s``;
* a **Pushgateway**, where the controller pushes its ``vigil_rollout_*`` metrics.

A rollout starts the candidate in the free slot (the **canary**), moves HAProxy's weights step
by step and, once promoted, the canary's slot becomes the primary's and the old primary is
stopped (the next rollout uses the other slot). Every process runs in a session of its own and
is recorded in ``<state_dir>/stack/stack.json`` with its PID and start time: the stack outlives
the commands, a restarted controller finds its canary again, and ``vigil rollout stack down``
stops everything by PID.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from inference.client import free_port, health, server_command
from rollout import Say, quiet
from rollout.haproxy import (
    MIRROR_HEALTH_PATH,
    MIRROR_SERVER,
    SHADOW_BACKEND,
    SLOTS,
    HAProxyAdmin,
    render_config,
)
from rollout.processes import Proc, ProcessError, spawn
from rollout.state import RolloutError, write_atomic
from vigil.registry import CHAMPION, Registry
from vigil.settings import Settings, settings_env

STACK_DIR: Final = "stack"
STACK_FILE: Final = "stack.json"
SERVING_JOB: Final = "vigil-serving"
MIRROR_JOB: Final = "vigil-rollout-mirror"
PUSHGATEWAY_JOB: Final = "pushgateway"
SLOT_LABEL: Final = "rollout_slot"
#: Seconds HAProxy gets to finish requests in flight on a server before it is stopped.
DRAIN_TIMEOUT_S: Final = 10.0



def program(name: str) -> str:
    """The path of a program of the stack (Debian installs haproxy in /usr/sbin)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if path is None:
        raise RolloutError(f"{name} is not installed; the local rollout stack needs the "
                           "Debian packages haproxy, prometheus and prometheus-pushgateway")
    return path


@dataclasses.dataclass
class Slot:
    version: int
    proc: Proc

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "proc": self.proc.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Slot:
        return cls(version=int(data["version"]), proc=Proc.from_dict(data["proc"]))


@dataclasses.dataclass
class Stack:
    """What ``stack.json`` records (see the module docstring)."""

    dir: Path
    model_name: str
    ports: dict[str, int]
    scrape_interval_s: float
    primary_slot: str
    slots: dict[str, Slot | None]
    services: dict[str, Proc]
    mirror: Proc | None = None

    # ------------------------------------------------------------------ places

    @property
    def url(self) -> str:
        """Where clients call the model (HAProxy's frontend)."""
        return f"http://127.0.0.1:{self.ports['frontend']}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    @property
    def pushgateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['pushgateway']}"

    def slot_url(self, slot: str) -> str:
        return f"http://127.0.0.1:{self.ports[slot]}"

    @property
    def mirror_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mirror']}"

    @property
    def canary_slot(self) -> str:
        return next(s for s in SLOTS if s != self.primary_slot)

    @property
    def admin(self) -> HAProxyAdmin:
        return HAProxyAdmin(self.dir / "haproxy.sock")

    def primary_version(self) -> int | None:
        slot = self.slots.get(self.primary_slot)
        return slot.version if slot is not None else None

    # ------------------------------------------------------------------ record

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "ports": self.ports,
            "scrape_interval_s": self.scrape_interval_s,
            "primary_slot": self.primary_slot,
            "slots": {k: None if v is None else v.to_dict() for k, v in self.slots.items()},
            "services": {k: v.to_dict() for k, v in self.services.items()},
            "mirror": None if self.mirror is None else self.mirror.to_dict(),
        }

    def save(self) -> None:
        write_atomic(self.dir / STACK_FILE, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Stack | None:
        path = folder / STACK_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            raise RolloutError(f"cannot read the local stack's record {path}: {e}") from e
        slots = data.get("slots", {})
        return cls(
            dir=folder,
            model_name=str(data["model_name"]),
            ports={str(k): int(v) for k, v in data["ports"].items()},
            scrape_interval_s=float(data["scrape_interval_s"]),
            primary_slot=str(data["primary_slot"]),
            slots={s: None if slots.get(s) is None else Slot.from_dict(slots[s])
                   for s in SLOTS},
            services={str(k): Proc.from_dict(v) for k, v in data["services"].items()},
            mirror=None if data.get("mirror") is None else Proc.from_dict(data["mirror"]),
        )

    def processes(self) -> dict[str, Proc]:
        out = {f"server {s} (version {slot.version})": slot.proc
               for s, slot in self.slots.items() if slot is not None}
        out.update(self.services)
        if self.mirror is not None:
            out["mirror"] = self.mirror
        return out

    def running(self) -> bool:
        haproxy = self.services.get("haproxy")
        return haproxy is not None and haproxy.alive()


def stack_dir(settings: Settings) -> Path:
    return settings.rollout_state_dir / STACK_DIR


def load_stack(settings: Settings) -> Stack | None:
    return Stack.load(stack_dir(settings))


def running_stack(settings: Settings) -> Stack:
    """The running local stack, or a :class:`RolloutError` saying how to start one."""
    stack = load_stack(settings)
    if stack is None or not stack.running():
        raise RolloutError(
            f"the local rollout stack is not running (state in {stack_dir(settings)}): start "
            "it with `vigil rollout stack up`"
        )
    if stack.model_name != settings.registry.model_name:
        raise RolloutError(f"the local rollout stack serves model {stack.model_name!r}, not "
                           f"{settings.registry.model_name!r}")
    return stack


# ---------------------------------------------------------------------- configuration files


def render_prometheus(stack: Stack) -> str:
    interval = f"{round(stack.scrape_interval_s * 1000)}ms"
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval,
                   "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": SERVING_JOB,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{stack.ports[slot]}"],
                     "labels": {SLOT_LABEL: slot}}
                    for slot in SLOTS
                ],
            },
            {
                "job_name": MIRROR_JOB,
                "metrics_path": "/mirror/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{stack.ports['mirror']}"]}],
            },
            {
                "job_name": PUSHGATEWAY_JOB,
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{stack.ports['pushgateway']}"]}],
            },
        ],
    }
    return "# Written by `vigil rollout stack up`.\n" + yaml.safe_dump(config, sort_keys=False)


def slot_selector(slot: str) -> str:
    return f'job="{SERVING_JOB}",{SLOT_LABEL}="{slot}"'


# ---------------------------------------------------------------------- processes


def server_environment(settings: Settings) -> dict[str, str]:
    """This process's environment plus every setting (children see exactly these settings)."""
    return {**os.environ, **settings_env(settings)}


def start_model_server(stack: Stack, settings: Settings, slot: str, version: int,
                       say: Say = quiet) -> Slot:
    """``vigil serve <model> --version V`` on the slot's port; returns once it is ready."""
    port = stack.ports[slot]
    command = server_command(model_name=stack.model_name, host="127.0.0.1", port=port,
                             version=version)
    log = stack.dir / "logs" / f"server-{slot}-v{version}-{int(time.time())}.log"
    say(f"starting {stack.model_name} version {version} in slot {slot} (port {port})")
    proc = spawn(command, log, env=server_environment(settings))
    slot_record = Slot(version=version, proc=proc)
    stack.slots[slot] = slot_record
    stack.save()
    wait_http(proc, stack.slot_url(slot), "/v2/health/ready",
              settings.rollout.local.ready_timeout_s, f"model server version {version}")
    return slot_record


def wait_http(proc: Proc, url: str, path: str, timeout_s: float, what: str) -> None:
    """Until ``GET url+path`` answers 200; :class:`ProcessError` with the log's end when the
    process exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ProcessError(f"{what} exited before it was ready:\n{proc.log_tail()}")
        if health(url, path) == 200:
            return
        time.sleep(0.2)
    raise ProcessError(f"{what} not ready after {timeout_s:g} s at {url}:\n{proc.log_tail()}")


def stack_up(settings: Settings, say: Say = quiet) -> Stack:
    """Start the local stack serving the registry's champion (see the module docstring)."""
    folder = stack_dir(settings)
    existing = Stack.load(folder)
    if existing is not None and existing.running():
        raise RolloutError(f"the local rollout stack is already running ({existing.url}); "
                           "stop it with `vigil rollout stack down`")
    if existing is not None:
        stop_stack(existing)  # leftovers of a stack whose HAProxy died
    name = settings.registry.model_name
    champion = Registry.from_settings(settings).find(name, CHAMPION)
    if champion is None:
        raise RolloutError(f"model {name!r} has no champion to serve: register or promote one "
                           "first (`vigil models promote`)")
    haproxy, prometheus, pushgateway = (
        program("haproxy"), program("prometheus"), program("prometheus-pushgateway"))
    local = settings.rollout.local
    folder.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        dir=folder,
        model_name=name,
        ports={"frontend": local.port, "prometheus": local.prometheus_port,
               "pushgateway": local.pushgateway_port, "a": free_port(), "b": free_port(),
               "mirror": free_port()},
        scrape_interval_s=local.scrape_interval_s,
        primary_slot=SLOTS[0],
        slots=dict.fromkeys(SLOTS),
        services={},
    )
    try:
        (folder / "haproxy.cfg").write_text(render_config(
            port=stack.ports["frontend"], slot_ports={s: stack.ports[s] for s in SLOTS},
            mirror_port=stack.ports["mirror"], primary_slot=stack.primary_slot,
            admin_socket=folder / "haproxy.sock"))
        (folder / "prometheus.yml").write_text(render_prometheus(stack))
        _check_config([haproxy, "-c", "-q", "-f", str(folder / "haproxy.cfg")], "HAProxy")
        _check_config([program("promtool"), "check", "config", str(folder / "prometheus.yml")],
                      "Prometheus")
        logs = folder / "logs"
        say(f"starting the Pushgateway on 127.0.0.1:{stack.ports['pushgateway']}")
        stack.services["pushgateway"] = spawn(
            [pushgateway, f"--web.listen-address=127.0.0.1:{stack.ports['pushgateway']}",
             f"--persistence.file={folder / 'pushgateway.data'}"],
            logs / "pushgateway.log")
        stack.save()
        say(f"starting Prometheus on 127.0.0.1:{stack.ports['prometheus']} (scrape every "
            f"{stack.scrape_interval_s:g} s)")
        stack.services["prometheus"] = spawn(
            [prometheus, f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{stack.ports['prometheus']}",
             "--storage.tsdb.retention.time=2d", "--web.enable-lifecycle"],
            logs / "prometheus.log")
        stack.save()
        start_model_server(stack, settings, stack.primary_slot, champion.version, say)
        say(f"starting HAProxy on 127.0.0.1:{stack.ports['frontend']}")
        stack.services["haproxy"] = spawn([haproxy, "-db", "-f", str(folder / "haproxy.cfg")],
                                          logs / "haproxy.log")
        stack.save()
        wait_http(stack.services["pushgateway"], stack.pushgateway_url, "/-/ready", 30,
                  "the Pushgateway")
        wait_http(stack.services["prometheus"], stack.prometheus_url, "/-/ready", 60,
                  "Prometheus")
        _wait_socket(stack, 30)
        stack.admin.wait_status(stack.primary_slot, "UP", 30)
        wait_http(stack.services["haproxy"], stack.url, "/v2/health/ready", 30, "HAProxy")
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def _check_config(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RolloutError(f"{what} rejects the generated configuration: "
                           f"{(done.stdout + done.stderr).strip()[-2000:]}")


def _wait_socket(stack: Stack, timeout_s: float) -> None:
    haproxy = stack.services["haproxy"]
    deadline = time.monotonic() + timeout_s
    while not (stack.dir / "haproxy.sock").exists():
        if not haproxy.alive():
            raise ProcessError(f"HAProxy exited:\n{haproxy.log_tail()}")
        if time.monotonic() > deadline:
            raise ProcessError("HAProxy's admin socket did not appear")
        time.sleep(0.05)


def stop_stack(stack: Stack, say: Say = quiet) -> list[str]:
    """Stop every process of the stack (by PID; servers gracefully) and forget them."""
    stopped = []
    for name, proc in stack.processes().items():
        if proc.alive():
            say(f"stopping {name} (pid {proc.pid})")
            proc.stop(timeout_s=30)
            stopped.append(name)
    stack.slots = dict.fromkeys(SLOTS)
    stack.services = {}
    stack.mirror = None
    for leftover in (stack.dir / STACK_FILE, stack.dir / "haproxy.sock"):
        leftover.unlink(missing_ok=True)
    return stopped


def stack_down(settings: Settings, say: Say = quiet) -> list[str]:
    stack = load_stack(settings)
    if stack is None:
        return []
    return stop_stack(stack, say)


# ---------------------------------------------------------------------- the target


class LocalTarget:
    """Canary steps as HAProxy weights between the stack's two slots."""

    kind: Final = "local"

    def __init__(self, settings: Settings, stack: Stack, *, primary_slot: str | None = None,
                 say: Say = quiet) -> None:
        self.settings = settings
        self.stack = stack
        #: The slots as the rollout sees them (fixed at its start; a resumed rollout whose
        #: promotion already swapped the stack's slots still knows which one was the canary).
        self.primary_slot = primary_slot or stack.primary_slot
        self.canary_slot = next(s for s in SLOTS if s != self.primary_slot)
        self.say = say

    @classmethod
    def create(cls, settings: Settings, params: Mapping[str, Any] | None = None,
               say: Say = quiet) -> LocalTarget:
        stack = running_stack(settings)
        primary = None if params is None else params.get("primary_slot")
        return cls(settings, stack, primary_slot=primary, say=say)

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "primary_slot": self.primary_slot,
                "canary_slot": self.canary_slot}

    @property
    def prometheus_url(self) -> str:
        return self.stack.prometheus_url

    @property
    def pushgateway_url(self) -> str:
        return self.stack.pushgateway_url

    def serving_version(self) -> int | None:
        return self.stack.primary_version()

    def selectors(self, primary_version: int | None, canary_version: int) -> tuple[str, str]:
        return slot_selector(self.primary_slot), slot_selector(self.canary_slot)

    def supports_shadow(self) -> bool:
        return True

    def prepare(self, version: int) -> None:
        """The candidate ready in the canary slot, with no traffic yet. A canary of this
        version already running there (a resumed rollout) is kept."""
        stack, slot = self.stack, self.canary_slot
        current = stack.slots.get(slot)
        admin = stack.admin
        if current is not None and current.version == version and current.proc.alive():
            self.say(f"canary version {version} already running in slot {slot}")
            wait_http(current.proc, stack.slot_url(slot), "/v2/health/ready",
                      self.settings.rollout.local.ready_timeout_s,
                      f"model server version {version}")
        else:
            if current is not None:
                self._stop_slot(slot)
            start_model_server(stack, self.settings, slot, version, self.say)
        admin.set_weight(slot, 0)
        admin.set_state(slot, "ready")
        admin.wait_status(slot, "UP", 30)

    def set_traffic(self, percent: int) -> None:
        """Canary weight ``percent``, primary ``100 - percent``; the growing side first, so
        that the two never add up to nothing."""
        admin = self.stack.admin
        canary, primary = int(percent), 100 - int(percent)
        order = [(self.canary_slot, canary), (self.primary_slot, primary)]
        if canary < admin.weights().get(self.canary_slot, 0):
            order.reverse()
        for slot, weight in order:
            admin.set_weight(slot, weight)

    def set_shadow(self, on: bool) -> None:
        """Mirror all traffic through :mod:`rollout.mirror` (on) or stop mirroring (off)."""
        stack, admin = self.stack, self.stack.admin
        if on:
            if stack.mirror is None or not stack.mirror.alive():
                command = [
                    sys.executable, "-m", "rollout.mirror",
                    "--port", str(stack.ports["mirror"]),
                    "--primary", stack.slot_url(self.primary_slot),
                    "--canary", stack.slot_url(self.canary_slot),
                    "--model-name", stack.model_name,
                ]
                self.say("starting the shadow mirror")
                stack.mirror = spawn(command, stack.dir / "logs" / "mirror.log",
                                     env=server_environment(self.settings))
                stack.save()
                wait_http(stack.mirror, stack.mirror_url, MIRROR_HEALTH_PATH, 60, "the mirror")
            admin.set_state(MIRROR_SERVER, "ready", SHADOW_BACKEND)
            admin.wait_status(MIRROR_SERVER, "UP", 30, SHADOW_BACKEND)
            return
        if (SHADOW_BACKEND, MIRROR_SERVER) in admin.stats():
            admin.set_state(MIRROR_SERVER, "maint", SHADOW_BACKEND)
            admin.wait_idle(MIRROR_SERVER, DRAIN_TIMEOUT_S, SHADOW_BACKEND)
        if stack.mirror is not None:
            stack.mirror.stop(timeout_s=30)
            stack.mirror = None
            stack.save()

    def promote(self, version: int) -> None:
        """All traffic to the canary slot, which becomes the primary; the old primary stops.
        Safe to repeat after a crash part-way."""
        stack = self.stack
        if stack.primary_slot != self.canary_slot:
            self.set_shadow(False)
            self.set_traffic(100)
            stack.primary_slot = self.canary_slot
            stack.save()
        if stack.slots.get(self.primary_slot) is not None:
            self._stop_slot(self.primary_slot)

    def rollback(self, primary_version: int | None = None) -> None:
        """All traffic to the primary; the canary stops."""
        self.set_shadow(False)
        if self.stack.primary_slot == self.canary_slot:
            raise RolloutError("the canary was already promoted; use `vigil models rollback` "
                               "and a new rollout to go back")
        self.set_traffic(0)
        self._stop_slot(self.canary_slot)

    def _stop_slot(self, slot: str) -> None:
        """Out of HAProxy's rotation (maintenance), drained, then stopped gracefully."""
        stack, admin = self.stack, self.stack.admin
        admin.set_weight(slot, 0)
        admin.set_state(slot, "maint")
        admin.wait_idle(slot, DRAIN_TIMEOUT_S)
        current = stack.slots.get(slot)
        if current is not None:
            self.say(f"stopping version {current.version} in slot {slot}")
            current.proc.stop(timeout_s=60)
        stack.slots[slot] = None
        stack.save()
