"""Start a model server as a subprocess, wait until it is ready, send it transactions.

For the demo, tests and benchmarks::

    from inference.client import start_server, predict, instances_from_frame

    with start_server(config="vigil.yaml", port=8080) as server:   # `vigil serve fraud`
        answer = predict(server.url, instances_from_frame(transactions.tail(3)))
        print(format_answer(answer))

:func:`start_server` runs ``python -m vigil_cli [--config C] serve [MODEL] --port P`` on
127.0.0.1, logs to a file, and returns once ``GET /v2/health/ready`` answers 200 (the model is
loaded and the online store reachable). If the process exits first, or readiness does not come
within the timeout, it raises :class:`ServerStartError` with the end of the log. Stopping sends
SIGTERM (graceful: in-flight requests finish, appends and the inference log are flushed) and
kills after a timeout. Plain ``urllib``: no client library needed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vigil import contract as c


class ServerStartError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_command(
    *,
    model_name: str | None = None,
    config: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int,
    version: int | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """``vigil serve`` of ``model_name`` (None: the settings' ``registry.model_name``)."""
    cmd = [sys.executable, "-m", "vigil_cli"]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += ["serve", *([model_name] if model_name else []), "--host", host, "--port", str(port)]
    if version is not None:
        cmd += ["--version", str(version)]
    return [*cmd, *extra_args]


def start_server(
    *,
    model_name: str | None = None,
    config: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    version: int | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    command: Sequence[str] | None = None,
    log_path: Path | None = None,
    ready_timeout_s: float = 180.0,
    wait: bool = True,
) -> ServerProcess:
    """Start ``vigil serve`` (or ``command``) and wait for readiness (see module docstring).
    ``env`` is added to this process's environment; ``wait=False`` returns at once."""
    port = port or free_port(host)
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix=f"vigil-serve-{port}-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    cmd = list(command) if command is not None else server_command(
        model_name=model_name, config=config, host=host, port=port, version=version,
        extra_args=extra_args,
    )
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = ServerProcess(process, f"http://{host}:{port}", log_path)
    if wait:
        try:
            wait_ready(server, ready_timeout_s)
        except ServerStartError:
            server.stop(timeout_s=10)
            raise
    return server


def wait_ready(server: ServerProcess, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise ServerStartError(
                f"server exited with code {code} before it was ready:\n{server.log_tail()}"
            )
        if health(server.url) == 200:
            return
        time.sleep(0.2)
    raise ServerStartError(
        f"server not ready after {timeout_s:.0f} s at {server.url}:\n{server.log_tail()}"
    )


def health(url: str, path: str = "/v2/health/ready", timeout_s: float = 2.0,
           headers: Mapping[str, str] | None = None) -> int | None:
    """HTTP status of a GET (with ``headers``), None when nothing answers."""
    request = urllib.request.Request(url + path, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError):
        return None


def post_json(
    url: str,
    body: Any,
    *,
    token: str | None = None,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """POST a JSON body; returns (status, decoded JSON answer)."""
    data = json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=all_headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read() or b"null")


def predict(
    url: str,
    instances: Sequence[Mapping[str, Any]],
    *,
    model_name: str = "fraud",
    token: str | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Score transactions with the V1 protocol; raises on a non-200 answer."""
    status, answer = post_json(
        f"{url}/v1/models/{model_name}:predict", {"instances": list(instances)},
        token=token, timeout_s=timeout_s,
    )
    if status != 200:
        raise RuntimeError(f"predict answered {status}: {answer}")
    assert isinstance(answer, dict)
    return answer


def instances_from_frame(transactions: pd.DataFrame) -> list[dict[str, Any]]:
    """Raw transactions (the data contract's columns) as V1 request instances."""
    out = []
    for record in transactions.to_dict(orient="records"):
        instance: dict[str, Any] = {
            c.TX_DATETIME: pd.Timestamp(record[c.TX_DATETIME]).isoformat(),
            c.CUSTOMER_ID: str(record[c.CUSTOMER_ID]),
            c.TERMINAL_ID: str(record[c.TERMINAL_ID]),
            c.TX_AMOUNT: float(record[c.TX_AMOUNT]),
        }
        if record.get(c.TRANSACTION_ID) is not None:
            instance[c.TRANSACTION_ID] = str(record[c.TRANSACTION_ID])
        out.append(instance)
    return out


def format_answer(answer: Mapping[str, Any]) -> str:
    """One line per scored transaction, for people."""
    lines = [
        f"model {answer.get('model_name')} version {answer.get('model_version')} "
        f"({answer.get('feature_service')}, threshold {answer.get('threshold'):.3g})"
        + ("  DEGRADED: default features" if answer.get("degraded") else "")
    ]
    for p in answer.get("predictions", []):
        fresh = p.get("freshness", {})
        lines.append(
            f"  {p['transaction_id']:>12}  score {p['score']:.4f}  {p['decision']:<5}  "
            f"customer {fresh.get('customer')}, terminal {fresh.get('terminal')}"
        )
    return "\n".join(lines)


def demo_requests(
    url: str, transactions: pd.DataFrame, *, batch: int = 3, token: str | None = None
) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """Send a few example requests (one transaction, then a batch) and print them with the
    answers; returns the (instances, answer) pairs."""
    instances = instances_from_frame(transactions)
    exchanges = []
    for group in (instances[:1], instances[1 : 1 + batch]):
        if not group:
            continue
        answer = predict(url, group, token=token)
        print(f"POST {url}/v1/models/fraud:predict")
        print(json.dumps({"instances": group}, indent=2))
        print(format_answer(answer))
        exchanges.append((group, answer))
    return exchanges
