"""A real Pushgateway (Debian ``prometheus-pushgateway``) on a free 127.0.0.1 port, started and
stopped by PID, and a reader of what it exposes."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

from inference.client import free_port


def program(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} (Debian package {package}) is required: make system-packages"
    return path


@contextlib.contextmanager
def pushgateway(log_dir: Path) -> Iterator[str]:
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "pushgateway.log", "wb") as log:
        proc = subprocess.Popen(
            [program("prometheus-pushgateway", "prometheus-pushgateway"),
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (log_dir / "pushgateway.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the Pushgateway did not become ready in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


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
    with open(folder / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [program("prometheus", "prometheus"), f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (folder / "prometheus.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "Prometheus did not become ready in 60 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


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
    with open(folder / "alertmanager.log", "wb") as log:
        proc = subprocess.Popen(
            [program("prometheus-alertmanager", "prometheus-alertmanager"),
             f"--config.file={folder / 'alertmanager.yml'}",
             f"--storage.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (folder / "alertmanager.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "Alertmanager did not become ready in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
