"""The feature definition on DuckDB vs. Spark local mode, at the handbook's size (~1.75M rows).

1. End to end through the command line, each engine in its own process, process start to
   ``features.parquet`` written: ``vigil featurize --no-store --engine duckdb`` and ``--engine
   spark --master local[2]`` (JVM start included).
2. In one process, the same frame: DuckDB, then one Spark session (local[2]) with the window
   shuffles in 2, 4, 8 and 16 partitions: seconds and rows/s of Spark by partition count, and
   the largest difference between Spark's and DuckDB's features (the parity tests' 1e-9).

Both engines run the same SQL (:func:`feature_store.transforms.batch_sql`); only the executor
differs. This machine has 2 cores, so local[2] is all Spark gets: the numbers show the cost of
Spark on one machine, not its scaling across a cluster. Load averages at start and end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from feature_store.engines import SparkOptions
from feature_store.transforms import DEFAULT_SPEC, batch_features
from vigil.data.ingest import read_transactions

PARTITIONS = (2, 4, 8, 16)
MASTER = "local[2]"
#: The 1g default heap runs out collecting 1.8M rows of statistics in local mode.
DRIVER_MEMORY = "4g"


def _cli_seconds(data: Path, out: Path, *engine_args: str) -> float:
    """Wall-clock seconds of ``vigil featurize`` in a fresh process."""
    command = [sys.executable, "-m", "vigil_cli", "featurize", "--transactions", str(data),
               "--out", str(out), "--no-store", *engine_args]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "Error" in line][:5]
        raise RuntimeError(f"{' '.join(command)} failed: {errors or done.stderr[-2000:]}")
    if not (out / "features.parquet").exists():
        raise RuntimeError(f"{out}/features.parquet was not written")
    return seconds


def main() -> dict[str, Any]:
    from bench.common import handbook_data
    from feature_store.spark import spark_features, spark_session

    data = handbook_data()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vigil-bench-spark-") as scratch:
        cli_duckdb = _cli_seconds(data, Path(scratch) / "duckdb", "--engine", "duckdb")
        cli_spark = _cli_seconds(data, Path(scratch) / "spark", "--engine", "spark",
                                 "--master", MASTER, "--partitions", "2",
                                 "--driver-memory", DRIVER_MEMORY)

    tx = read_transactions(data).frame
    rows = len(tx)
    t0 = time.perf_counter()
    expected = batch_features(tx)
    duckdb_s = time.perf_counter() - t0

    by_partitions: dict[int, dict[str, float]] = {}
    worst = 0.0
    t0 = time.perf_counter()
    options = SparkOptions(master=MASTER, partitions=PARTITIONS[0], driver_memory=DRIVER_MEMORY)
    with spark_session(options) as session:
        start_s = time.perf_counter() - t0
        for partitions in PARTITIONS:
            session.conf.set("spark.sql.shuffle.partitions", str(partitions))
            t0 = time.perf_counter()
            got = spark_features(tx, session=session)
            seconds = time.perf_counter() - t0
            by_partitions[partitions] = {
                "seconds": round(seconds, 2),
                "rows_per_second": round(rows / seconds),
            }
            for name in DEFAULT_SPEC.features:
                a = got[name].to_numpy(np.float64)
                b = expected[name].to_numpy(np.float64)
                worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))))
            print(f"   spark {MASTER}, {partitions} partitions: {seconds:.1f} s", flush=True)
    load_end = os.getloadavg()[0]
    best = min(by_partitions, key=lambda p: by_partitions[p]["seconds"])
    spark_s = by_partitions[best]["seconds"]
    summary: list[dict[str, Any]] = [
        {
            "what": f"vigil featurize {rows:,} rows, process start to file written (s)",
            "stock": round(cli_duckdb, 1),
            "vigil": round(cli_spark, 1),
            "ratio": round(cli_spark / cli_duckdb, 1),
        },
        {
            "what": "feature computation in one process, Spark at its best partition count (s)",
            "stock": round(duckdb_s, 1),
            "vigil": spark_s,
            "ratio": round(spark_s / duckdb_s, 1),
        },
        *(
            {
                "what": f"Spark {MASTER}, {p} shuffle partitions: rows/s ({v['seconds']} s)",
                "vigil": v["rows_per_second"],
            }
            for p, v in by_partitions.items()
        ),
        {
            "what": "largest relative difference Spark vs DuckDB, all features",
            "vigil": worst,
            "target": "<= 1e-9",
            "met": worst <= 1e-9,
        },
    ]
    return {
        "rows": rows,
        "master": MASTER,
        "driver_memory": DRIVER_MEMORY,
        "columns": {"stock": "DuckDB", "vigil": f"Spark {MASTER}"},
        "seconds": {
            "cli_duckdb": round(cli_duckdb, 2),
            "cli_spark": round(cli_spark, 2),
            "duckdb_in_process": round(duckdb_s, 2),
            "spark_session_start": round(start_s, 2),
        },
        "spark_by_partitions": by_partitions,
        "spark_over_duckdb": {
            "cli": round(cli_spark / cli_duckdb, 2),
            "in_process": round(spark_s / duckdb_s, 2),
        },
        "max_relative_difference": worst,
        "loadavg_1m": {"start": round(load_start, 2), "end": round(load_end, 2)},
        "summary": summary,
        "targets_met": worst <= 1e-9,
    }
