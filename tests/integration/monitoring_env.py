"""A real Pushgateway (Debian ``prometheus-pushgateway``) on a free 127.0.0.1 port, started and
stopped by PID, and a reader of what it exposes."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import yaml

from inference.client import free_port


def program(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} (Debian package {package}) is required: make system-packages"
    return path


@contextlib.contextmanager
def served(argv: list[str], log_path: Path, url: str, ready_path: str, *,
           ready_timeout_s: float = 30, stop_timeout_s: float = 10,
           env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[str]:
    """Run ``argv`` (a server on ``url``), wait until it listens on ``url``'s port and
    ``ready_path`` answers 200, yield ``url``; stopped by PID (SIGTERM, then SIGKILL after
    ``stop_timeout_s``). Its output goes to ``log_path``, whose tail an early exit shows.

    "It listens" is checked on the process itself: a free port can be taken by another
    session's server between ``free_port()`` and the bind, and that server's ready answer
    must not pass for this one's (seen: a Pushgateway fed by another test run)."""
    port = urlsplit(url).port
    assert port is not None, f"{url}: no port"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if listens(proc.pid, port) and \
                        httpx.get(f"{url}{ready_path}", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, (
                f"{Path(argv[0]).name} did not become ready in {ready_timeout_s:g} s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` (or one of its children) has a listening socket on ``port``."""
    try:
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
        return any(conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
                   for member in family for conn in member.connections(kind="inet"))
    except psutil.Error:
        return False


@contextlib.contextmanager
def pushgateway(log_dir: Path) -> Iterator[str]:
    port = free_port()
    with served([program("prometheus-pushgateway", "prometheus-pushgateway"),
                 f"--web.listen-address=127.0.0.1:{port}",
                 # Debian's default keeps every Pushgateway's pushes in one file,
                 # /var/lib/prometheus/pushgateway.data, which the next one serves: a test
                 # saw the series an earlier test had pushed. Each one keeps its own.
                 f"--persistence.file={log_dir / 'pushgateway.data'}"],
                log_dir / "pushgateway.log", f"http://127.0.0.1:{port}", "/-/ready") as url:
        yield url


def samples(url: str, prefix: str) -> dict[str, float]:
    """``name{labels}`` -> value of the series starting with ``prefix`` the Pushgateway exposes,
    labels sorted, its own ``job``/``instance`` labels dropped."""
    out: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if not line.startswith(prefix):
            continue
        key, _, value = line.rpartition(" ")
        name, _, rest = key.partition("{")
        labels = sorted(
            part for part in rest.rstrip("}").split(",")
            if part and not part.startswith(("job=", "instance="))
        )
        out[f"{name}{{{','.join(labels)}}}"] = float(value)
    return out


@contextlib.contextmanager
def prometheus(folder: Path, targets: list[str], rule_files: list[Path]) -> Iterator[str]:
    """A real Prometheus scraping ``targets`` (host:port, honour_labels as for a Pushgateway)
    every second and evaluating ``rule_files`` every second; stopped by PID."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": "pushgateway", "honor_labels": True,
                            "static_configs": [{"targets": targets}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    with served([program("prometheus", "prometheus"), f"--config.file={folder / 'prometheus.yml'}",
                 f"--storage.tsdb.path={folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                folder / "prometheus.log", f"http://127.0.0.1:{port}", "/-/ready",
                ready_timeout_s=60, stop_timeout_s=20) as url:
        yield url


def alerts(url: str, name: str) -> list[dict[str, object]]:
    """Active (pending or firing) alerts called ``name``."""
    body = httpx.get(f"{url}/api/v1/alerts", timeout=10).json()
    return [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == name]


@contextlib.contextmanager
def alertmanager(folder: Path, config: dict[str, object]) -> Iterator[str]:
    """A real Alertmanager (Debian ``prometheus-alertmanager``) with ``config`` on a free
    127.0.0.1 port, no cluster gossip, storage under ``folder``; stopped by PID."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config))
    with served([program("prometheus-alertmanager", "prometheus-alertmanager"),
                 f"--config.file={folder / 'alertmanager.yml'}",
                 f"--storage.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                 "--cluster.listen-address="],
                folder / "alertmanager.log", f"http://127.0.0.1:{port}", "/-/ready") as url:
        yield url
