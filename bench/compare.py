"""Compare two commits on the same benchmarks, interleaved in one run.

``python -m bench.compare BEFORE [AFTER] [--bench online serving] [--rounds 2]`` checks both
commits out as detached git worktrees in a scratch folder, runs each benchmark on each side in
turn (before, after, then after, before, ...) so that both sides see the same machine, and writes
``bench/results/compare.json``: per summary row of each benchmark, the median of Vigil's figure
on each side and the ratio after/before. The stock column of a benchmark runs the same code on
both sides, so its own after/before ratio is the noise of the run: a change is only a
regression where it is outside that.

``--collected DIR`` summarizes runs already made (files ``<side>-<bench>-<round>.json`` with
side ``before``/``after``) instead of running them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import DATA, machine, write_result

SIDES = ("before", "after")
#: After/before ratios within this band count as "no worse" (these machines' run-to-run noise
#: on the same code is of this order; the stock column measures it in each run).
TOLERANCE = 0.10
LOWER_IS_BETTER = ("(ms)", "(s)", "latency", "errors")


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def run(commits: dict[str, str], benches: list[str], rounds: int, into: Path) -> None:
    """Run every benchmark on both sides, interleaved; results land in ``into``."""
    scratch = Path(tempfile.mkdtemp(prefix="vigil-compare-"))
    trees = {}
    try:
        for side, commit in commits.items():
            trees[side] = scratch / side
            _git("worktree", "add", "--detach", str(trees[side]), commit)
        for round_ in range(1, rounds + 1):
            for bench in benches:
                # ABBA order: a load that drifts during the run favours neither side.
                for side in SIDES if round_ % 2 else SIDES[::-1]:
                    tree = trees[side]
                    env = {**os.environ, "PYTHONPATH": str(tree),
                           "VIGIL_BENCH_DATA": str(DATA.with_name(f"{DATA.name}-{side}"))}
                    print(f"== round {round_}: {bench} at {side} ({commits[side]}), "
                          f"load {os.getloadavg()[0]:.2f}", flush=True)
                    subprocess.run([sys.executable, "-m", "bench.run", bench], cwd=tree, env=env,
                                   check=True, stdout=subprocess.DEVNULL)
                    shutil.copy(tree / "bench" / "results" / f"{bench}.json",
                                into / f"{side}-{bench}-{round_}.json")
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarize(folder: Path) -> dict[str, Any]:
    """Medians per summary row and side, ratios after/before, the stock column as noise."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*-*-*.json")):
        side, bench, _ = path.stem.split("-", 2)
        if side in SIDES:
            runs.setdefault((side, bench), []).append(json.loads(path.read_text()))
    benches = sorted({bench for _, bench in runs})
    missing = [f"{side}/{b}" for b in benches for side in SIDES if (side, b) not in runs]
    if missing:
        raise SystemExit(f"bench.compare: no runs for {', '.join(missing)} in {folder}")
    rows, detail = [], {}
    for bench in benches:
        by_side = {side: runs[(side, bench)] for side in SIDES}
        detail[bench] = {
            side: {"commits": sorted({r.get("commit", "?") for r in results}),
                   "loadavg_1m": [r.get("machine", {}).get("loadavg_1m_at_start")
                                  for r in results]}
            for side, results in by_side.items()
        }
        for what in [row["what"] for row in by_side["after"][0].get("summary", [])]:
            values: dict[str, dict[str, list[float]]] = {}
            for side, results in by_side.items():
                for result in results:
                    for row in result.get("summary", []):
                        if row["what"] != what:
                            continue
                        for column in ("vigil", "stock"):
                            if isinstance(row.get(column), int | float):
                                values.setdefault(column, {}).setdefault(side, []).append(
                                    float(row[column]))
            vigil = values.get("vigil", {})
            if set(vigil) != set(SIDES) or min(vigil["before"]) <= 0:
                continue
            before, after = _median(vigil["before"]), _median(vigil["after"])
            ratio = round(after / before, 3)
            lower_better = any(word in what for word in LOWER_IS_BETTER)
            stock = values.get("stock", {})
            noise = (round(_median(stock["after"]) / _median(stock["before"]), 3)
                     if set(stock) == set(SIDES) and min(stock["before"]) > 0 else None)
            rows.append({
                "what": f"{bench}: {what}",
                "stock": before,
                "vigil": after,
                "ratio": ratio,
                "target": ("no worse: after/before <= " if lower_better
                           else "no worse: after/before >= ")
                + f"{1 + TOLERANCE if lower_better else 1 - TOLERANCE:.2f}"
                + (f" or within the stock side's own {noise}" if noise is not None else ""),
                # Worse only beyond the tolerance and beyond what the same code moved.
                "met": (ratio <= max(1 + TOLERANCE, noise or 0) if lower_better
                        else ratio >= min(1 - TOLERANCE, noise or 1)),
                "runs": {side: vigil[side] for side in SIDES},
            })
    commits = {side: sorted({c for d in detail.values() for c in d[side]["commits"]})
               for side in SIDES}
    loads = [load for d in detail.values() for side in SIDES for load in d[side]["loadavg_1m"]
             if isinstance(load, int | float)]
    return {
        # The load that matters is the runs', not this summary's.
        "machine": {**machine(), "loadavg_1m_at_start": f"{min(loads)}-{max(loads)} in the runs"
                    if loads else "?"},
        "columns": {"stock": f"before {','.join(commits['before'])}",
                    "vigil": f"after {','.join(commits['after'])}"},
        "rounds": {bench: len(runs[("after", bench)]) for bench in benches},
        "runs": detail,
        "summary": rows,
        "targets_met": all(row["met"] for row in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", nargs="?", help="commit to compare against")
    parser.add_argument("after", nargs="?", default="HEAD", help="commit to measure (HEAD)")
    parser.add_argument("--bench", nargs="+", default=["online", "serving"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--collected", type=Path,
                        help="summarize the runs in this folder instead of running")
    args = parser.parse_args(argv)
    if args.collected is None:
        if args.before is None:
            parser.error("give BEFORE (a commit) or --collected DIR")
        commits = {"before": _git("rev-parse", "--short", args.before),
                   "after": _git("rev-parse", "--short", args.after)}
        folder = Path(tempfile.mkdtemp(prefix="vigil-compare-runs-"))
        run(commits, args.bench, args.rounds, folder)
    else:
        folder = args.collected
        if not folder.is_dir():
            parser.error(f"--collected {folder}: not a folder")
    result = summarize(folder)
    path = write_result("compare", result)
    worse = [row["what"] for row in result["summary"] if not row["met"]]
    print(f"wrote {path}: {len(result['summary']) - len(worse)} of {len(result['summary'])} "
          f"rows no worse" + (f"; worse: {'; '.join(worse)}" if worse else ""))
    from bench import summary

    summary.update_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
