"""Run benchmarks: ``python -m bench.run [NAME ...]`` (all by default), then refresh the README.

Each benchmark is a module ``bench.<name>`` with ``main() -> dict`` that compares the stock way
with Vigil's side by side in one run and reports ratios as well as times.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from bench import summary
from bench.common import BENCHMARKS, write_result


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the vigil CLI does
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}")
    failed = []
    for name in args.names or BENCHMARKS:
        print(f"== bench {name}", flush=True)
        t0 = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        result = module.main()
        result["bench_seconds"] = round(time.perf_counter() - t0, 1)
        path = write_result(name, result)
        print(f"   wrote {path}", flush=True)
        if result.get("targets_met") is False:
            failed.append(name)
    summary.update_readme()
    if failed:
        print(f"targets missed: {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
