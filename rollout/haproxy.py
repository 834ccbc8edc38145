"""HAProxy as the local traffic splitter: its configuration and its runtime API.

The local stack's HAProxy has one frontend (where clients call the model) and two backends:

* ``serving`` — the model server slots ``a`` and ``b``, round-robin by weight. The controller
  moves traffic by changing the weights at run time through the admin socket
  (``set server serving/b weight 10``): no reload, keep-alive client connections stay open.
  Weights are percentages (primary ``100 - p``, canary ``p``). Health checks on
  ``/v2/health/ready`` take a dead server out; connection failures are redispatched.
* ``shadow`` — the mirror (:mod:`rollout.mirror`), disabled (maintenance) unless shadow mode is
  on; while it is up the frontend sends everything there, and if it dies the frontend falls
  back to ``serving`` by itself (``nbsrv(shadow)``).
"""

from __future__ import annotations

import csv
import io
import socket
import time
from pathlib import Path
from typing import Final

from vigil.errors import VigilError

FRONTEND: Final = "vigil"
BACKEND: Final = "serving"
SHADOW_BACKEND: Final = "shadow"
MIRROR_SERVER: Final = "mirror"
SLOTS: Final = ("a", "b")
HEALTH_PATH: Final = "/v2/health/ready"
MIRROR_HEALTH_PATH: Final = "/mirror/health"


class HAProxyError(VigilError):
    """HAProxy's admin socket refused a command or does not answer."""


def render_config(*, port: int, slot_ports: dict[str, int], mirror_port: int,
                  primary_slot: str, admin_socket: Path) -> str:
    """The whole configuration of the local stack's HAProxy."""
    servers = "\n".join(
        f"    server {slot} 127.0.0.1:{slot_ports[slot]} check weight "
        f"{100 if slot == primary_slot else 0}"
        for slot in SLOTS
    )
    return f"""# Written by `vigil rollout stack up`; weights change at run time (admin socket).
global
    stats socket {admin_socket} mode 600 level admin
    stats timeout 10s
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    timeout connect 2s
    timeout client 120s
    timeout server 60s
    timeout http-keep-alive 120s
    timeout check 2s
    retries 2
    option redispatch 1

frontend {FRONTEND}
    bind 127.0.0.1:{port}
    use_backend {SHADOW_BACKEND} if {{ nbsrv({SHADOW_BACKEND}) gt 0 }}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET {HEALTH_PATH}
    default-server inter 500ms fall 2 rise 1
{servers}

backend {SHADOW_BACKEND}
    option httpchk GET {MIRROR_HEALTH_PATH}
    server {MIRROR_SERVER} 127.0.0.1:{mirror_port} check inter 500ms fall 2 rise 1 disabled
"""


class HAProxyAdmin:
    """Commands over HAProxy's admin socket (one connection per command)."""

    def __init__(self, socket_path: Path, timeout_s: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def command(self, line: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(str(self.socket_path))
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as e:
            raise HAProxyError(f"HAProxy admin socket {self.socket_path}: {e}") from e
        return b"".join(chunks).decode(errors="replace")

    def set_weight(self, server: str, weight: int, backend: str = BACKEND) -> None:
        answer = self.command(f"set server {backend}/{server} weight {int(weight)}").strip()
        if answer:  # success is silent
            raise HAProxyError(f"set weight of {backend}/{server} to {weight}: {answer}")

    def set_state(self, server: str, state: str, backend: str = BACKEND) -> None:
        """``ready``, ``drain`` or ``maint``."""
        answer = self.command(f"set server {backend}/{server} state {state}").strip()
        if answer:
            raise HAProxyError(f"set state of {backend}/{server} to {state}: {answer}")

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        """``show stat`` as {(proxy, server): row}."""
        text = self.command("show stat")
        reader = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {(row["pxname"], row["svname"]): row for row in reader if row.get("pxname")}

    def server(self, server: str, backend: str = BACKEND) -> dict[str, str]:
        row = self.stats().get((backend, server))
        if row is None:
            raise HAProxyError(f"HAProxy has no server {backend}/{server}")
        return row

    def weights(self) -> dict[str, int]:
        stats = self.stats()
        return {slot: int(stats[(BACKEND, slot)]["weight"] or 0) for slot in SLOTS
                if (BACKEND, slot) in stats}

    def wait_status(self, server: str, status: str, timeout_s: float,
                    backend: str = BACKEND) -> None:
        """Until the server's health status starts with ``status`` (``UP``, ``DOWN``,
        ``MAINT``)."""
        deadline = time.monotonic() + timeout_s
        current = ""
        while time.monotonic() < deadline:
            current = self.server(server, backend)["status"]
            if current.startswith(status):
                return
            time.sleep(0.1)
        raise HAProxyError(f"{backend}/{server} is {current}, not {status}, after "
                           f"{timeout_s:g} s")

    def wait_idle(self, server: str, timeout_s: float, backend: str = BACKEND) -> bool:
        """Until no request is in flight on the server (current sessions 0)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if int(self.server(server, backend)["scur"] or 0) == 0:
                return True
            time.sleep(0.05)
        return False
