"""Shared helpers of the benchmarks: timing, machine description, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Every benchmark (a module bench.<name>), in the order `make bench` runs them and the README
#: shows them.
BENCHMARKS = [
    "simulate", "features", "spark", "online", "cluster", "pipeline", "handbook", "serving",
    "abuse", "rollout", "drift",
]
RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(os.environ.get("VIGIL_BENCH_DATA", "/tmp/vigil-bench"))


def machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m_at_start": round(load1, 2),
        "loadavg_5m_at_start": round(load5, 2),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[list[float], Any]:
    """Wall-clock seconds of ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds."""
    ordered = sorted(samples_s)
    if not ordered:
        return {}

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))] * 1e3

    return {
        "p50_ms": round(pct(0.50), 3),
        "p95_ms": round(pct(0.95), 3),
        "p99_ms": round(pct(0.99), 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(),
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def handbook_data() -> Path:
    """The handbook-size simulated data set (5,000 customers, 10,000 terminals, 183 days),
    simulated once into DATA/sim_full and reused."""
    from vigil.data.simulate import SimulationConfig, simulate, write_daily

    folder = DATA / "sim_full"
    if not (folder / "2018-09-30.parquet").exists():
        config = SimulationConfig()
        sim = simulate(config)
        write_daily(sim.transactions, folder, config.start_date, config.n_days)
    return folder


def split_response(buffer: bytes) -> tuple[int, bytes] | None:
    """The status of the first whole HTTP/1.1 response in ``buffer`` and the bytes after it,
    or None while it is incomplete (the load generators' parser: Content-Length bodies only)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(buffer) < end + 4 + length:
        return None
    return int(head[9:12]), buffer[end + 4 + length :]
