"""A real Redis Cluster on 127.0.0.1 for tests and benchmarks: :class:`LocalRedisCluster`.

``redis-server --cluster-enabled yes`` processes on free ports (each also needs its port +
10000 free, the cluster bus), joined by ``redis-cli --cluster create --cluster-replicas R``,
ready once every node reports ``cluster_state:ok`` and every replica is in sync with its
primary. No persistence (``--save '' --appendonly no``); a short ``cluster-node-timeout``
(default 1000 ms) so a killed primary's replica takes over within seconds. Every process is
stopped by its PID (:meth:`LocalRedisCluster.stop`); a test may SIGKILL, pause or restart one
node. A missing ``redis-server`` or ``redis-cli`` is an error naming the program.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

#: Offset of a node's cluster-bus port from its client port (fixed by Redis).
BUS_OFFSET = 10_000


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int) -> list[int]:
    """``count`` free ports in 20000-29999 (below the usual ephemeral range) whose bus ports
    (+10000) are free too."""
    ports: list[int] = []
    for _ in range(10_000):
        port = random.randrange(20_000, 30_000)
        if port not in ports and _free(port) and _free(port + BUS_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"no {count} free port pairs (p, p+{BUS_OFFSET}) in 20000-29999")


def program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: the Redis Cluster helper needs it "
                           "(Debian: redis-server, redis-tools; `make test-programs`)")
    return path


@dataclasses.dataclass
class LocalRedisCluster:
    """See the module docstring. ``start()``, use ``url`` / ``nodes``, ``stop()``."""

    workdir: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = 1_000
    ports: list[int] = dataclasses.field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    @property
    def url(self) -> str:
        """The address Vigil's ``redis_client`` takes (settings: ``redis.type: redis_cluster``,
        ``redis.cluster_nodes``)."""
        return "redis+cluster://" + ",".join(self.nodes)

    def client(self, port: int, timeout_s: float = 2.0) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    # lifecycle --------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> LocalRedisCluster:
        server, cli = program("redis-server"), program("redis-cli")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = free_cluster_ports(self.masters * (1 + self.replicas))
        try:
            for port in self.ports:
                self.start_node(port, server)
            created = subprocess.run(
                [cli, "--cluster", "create", *self.nodes, "--cluster-replicas",
                 str(self.replicas), "--cluster-yes"],
                check=False, capture_output=True, text=True, timeout=timeout_s,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}"
                                   f"{created.stderr[-2000:]}")
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, port: int, server: str | None = None) -> None:
        """Start (or restart, same config file: it rejoins) the node on ``port``."""
        self.processes[port] = subprocess.Popen(
            [server or program("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms),
             "--cluster-replica-validity-factor", "0",
             "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
             "--dir", str(self.workdir), "--save", "", "--appendonly", "no",
             "--logfile", str(self.workdir / f"redis-{port}.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self._until(lambda: self._ping(port), f"redis-server on {port} answers", 10.0, port)

    def _ping(self, port: int) -> bool:
        client = self.client(port, 0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _until(self, ok: object, what: str, timeout_s: float, port: int | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while not ok():  # type: ignore[operator]
            if port is not None and self.processes[port].poll() is not None:
                raise RuntimeError(f"redis-server on {port} exited: see "
                                   f"{self.workdir / f'redis-{port}.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis cluster: gave up waiting for {what}")
            time.sleep(0.05)

    def alive(self) -> list[int]:
        return [p for p in self.ports if self.processes[p].poll() is None]

    def info(self, port: int, section: str) -> dict[str, str]:
        client = self.client(port)
        try:
            text = client.execute_command("INFO", section)
        finally:
            client.close()
        if isinstance(text, dict):
            return {k: str(v) for k, v in text.items()}
        return dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)

    def ready(self, synced: bool = True) -> bool:
        """Every live node says ``cluster_state:ok`` and there are ``masters`` primaries;
        ``synced``: every live replica's link to its primary is up and every primary has
        ``replicas`` replicas online (so a ``WAIT`` can be confirmed)."""
        try:
            for port in self.alive():
                client = self.client(port, 0.5)
                try:
                    state = client.execute_command("CLUSTER", "INFO")
                finally:
                    client.close()
                state = state.decode() if isinstance(state, bytes) else str(state)
                if "cluster_state:ok" not in state:
                    return False
                if not synced:
                    continue
                replication = self.info(port, "replication")
                if replication.get("role") == "slave" and \
                        replication.get("master_link_status") != "up":
                    return False
                if replication.get("role") == "master":
                    online = sum("online" in v for k, v in replication.items()
                                 if k.startswith("slave") and k[5:].isdigit())
                    if online < self.replicas:
                        return False
            return len(self.primaries()) == self.masters
        except redis.RedisError:
            return False

    def wait_ready(self, timeout_s: float = 60.0, synced: bool = True) -> None:
        self._until(lambda: self.ready(synced), "cluster_state:ok on every node"
                    + (", replicas in sync" if synced else ""), timeout_s)

    def roles(self) -> dict[int, tuple[str, int | None]]:
        """Port -> (``master`` | ``slave``, the primary's port for a replica), as the first
        live node sees it (``CLUSTER NODES``)."""
        client = self.client(self.alive()[0])
        try:
            text = client.execute_command("CLUSTER", "NODES")
        finally:
            client.close()
        text = text.decode() if isinstance(text, bytes) else str(text)
        by_id: dict[str, int] = {}
        rows = []
        for line in text.strip().splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            by_id[fields[0]] = port
            rows.append((port, fields[2], fields[3]))
        out: dict[int, tuple[str, int | None]] = {}
        for port, flags, master in rows:
            if "fail" in flags.split(","):
                continue
            role = "master" if "master" in flags else "slave"
            out[port] = (role, by_id.get(master) if role == "slave" else None)
        return out

    def primaries(self) -> list[int]:
        return sorted(p for p, (role, _) in self.roles().items()
                      if role == "master" and p in self.alive())

    def replica_of(self, primary: int) -> int:
        return next(p for p, (role, of) in self.roles().items()
                    if role == "slave" and of == primary)

    def primary_of(self, key: bytes) -> int:
        """The port of the primary serving ``key`` (``CLUSTER KEYSLOT`` + ``CLUSTER SLOTS``)."""
        client = self.client(self.alive()[0])
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        finally:
            client.close()
        raise RuntimeError(f"no primary serves slot {slot}")

    # faults ---------------------------------------------------------------------------------
    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a crash: no goodbye to the cluster)."""
        process = self.processes[port]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def pause(self, port: int) -> None:
        os.kill(self.processes[port].pid, signal.SIGSTOP)

    def resume(self, port: int) -> None:
        os.kill(self.processes[port].pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop every node by its PID (SIGTERM, SIGKILL after 10 s)."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
                    process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
