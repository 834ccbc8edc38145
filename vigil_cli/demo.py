"""``make demo``: simulate transactions, train through the local pipeline, serve, score.

1. simulate 61 days of card transactions ending yesterday (the last day is held out: it plays
   the part of tomorrow's traffic);
2. run the ``fraud-training`` pipeline on the first 60 days through ``kfp.local``
   (validate, featurize into the offline store, train, evaluate against the champion,
   register);
3. load the online store with the batch snapshots (``vigil materialize``);
4. start ``vigil serve fraud`` on 127.0.0.1 and score held-out transactions with it.

With a terminal attached the server stays up until Ctrl-C; otherwise (CI, pipes) it stops
after the examples. ``python -m vigil_cli.demo --help`` lists the options.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from vigil import contract as c
from vigil.data.simulate import SimulationConfig, simulate, write_daily
from vigil.errors import VigilError
from vigil.settings import Settings, load_settings
from vigil_cli.cli import quiet_library_warnings

DAYS = 61


def simulate_days(
    data: Path, replay: Path, customers: int, terminals: int, seed: int
) -> pd.DataFrame:
    """Training days into ``data``, the held-out last day into ``replay``; the last day's
    transactions are returned."""
    start = date.today() - timedelta(days=DAYS)
    config = SimulationConfig(
        n_customers=customers, n_terminals=terminals, n_days=DAYS, start_date=start, seed=seed
    )
    sim = simulate(config)
    tx = sim.transactions
    last = tx[c.TX_TIME_DAYS] == DAYS - 1
    for folder in (data, replay):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.parquet"):
            old.unlink()
    write_daily(tx[~last], data, start, DAYS - 1)
    held_out = tx[last].reset_index(drop=True)
    write_daily(held_out.assign(**{c.TX_TIME_DAYS: 0}), replay, start + timedelta(DAYS - 1), 1)
    stats = sim.statistics()
    print(
        f"simulated {stats['transactions']:,} transactions ({stats['fraud_rate']:.2%} fraud), "
        f"{start} .. {start + timedelta(DAYS - 1)}: {len(tx) - len(held_out):,} for training in "
        f"{data}, the last day's {len(held_out):,} held out in {replay}",
        flush=True,
    )
    return held_out


def examples(held_out: pd.DataFrame, n: int = 4) -> pd.DataFrame:
    """A few held-out transactions in time order, with a fraud among them when there is one."""
    early = held_out.sort_values(c.TX_DATETIME).head(n - 1)
    frauds = held_out[held_out[c.TX_FRAUD] == 1].sort_values(c.TX_DATETIME)
    picked = pd.concat([early, frauds.head(1)]) if len(frauds) else held_out.head(n)
    return picked.drop_duplicates(c.TRANSACTION_ID).sort_values(c.TX_DATETIME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vigil_cli.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data", type=Path, default=Path("data/fraud"), help="training data folder"
    )
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--terminals", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=None, help="serving port (default: free)")
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep serving until Ctrl-C (default: when a terminal is attached)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    quiet_library_warnings()
    try:
        settings = load_settings()
        return run(settings, args)
    except VigilError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(settings: Settings, args: argparse.Namespace) -> int:
    from feature_store.config import StoreConfig
    from feature_store.jobs import materialize
    from inference.client import demo_requests, start_server
    from pipelines.local import run_local
    from pipelines.params import FraudTrainingParams
    from vigil.registry import Registry

    quiet_library_warnings()  # again: importing Feast reset the DeprecationWarning filters
    print("== 1/4 simulate", flush=True)
    replay = args.data.parent / f"{args.data.name}-replay"
    held_out = simulate_days(args.data, replay, args.customers, args.terminals, args.seed)

    print("== 2/4 training pipeline (kfp.local)", flush=True)
    summary = run_local(
        FraudTrainingParams(transactions=str(args.data.resolve())), settings=settings
    )
    print(summary.to_text(), flush=True)
    champion = Registry.from_settings(settings).find(settings.registry.model_name, "champion")
    if champion is None:
        print("no champion model to serve: the pipeline registered none", file=sys.stderr)
        return 1

    print("== 3/4 online store", flush=True)
    loaded = materialize(StoreConfig.from_settings(settings))
    print(
        f"materialized {loaded.customers:,} customers and {loaded.terminals:,} terminals into "
        f"{loaded.backend} in {loaded.seconds:.2f} s",
        flush=True,
    )

    print(f"== 4/4 serve {champion.label} and score held-out transactions", flush=True)
    server = start_server(model_name=settings.registry.model_name, port=args.port)
    try:
        demo_requests(server.url, examples(held_out))
        print(f"\nserver up at {server.url} (pid {server.process.pid}); for example:")
        print(f"  curl -s {server.url}/v2/models/fraud | python -m json.tool")
        print(f"  curl -s {server.url}/metrics | grep vigil_")
        wait = sys.stdin.isatty() if args.wait is None else args.wait
        if wait:
            print("Ctrl-C stops it.", flush=True)
            while server.process.poll() is None:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print("server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
