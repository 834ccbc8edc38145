"""Shared fixtures: small simulated data sets and an in-process ``vigil`` runner.

The session-scoped simulations and folders are shared between tests: treat them as read-only
and take a copy (the ``*_transactions`` fixtures) before changing anything.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from vigil.data.simulate import Simulation, SimulationConfig, simulate, write_daily
from vigil_cli.cli import main


def _import_kserve_with_a_clean_command_line() -> None:
    """``kserve.model_server`` parses ``sys.argv`` when imported (argparse, abbreviations on):
    pytest's own options, e.g. ``--co`` (taken for ``--configure_logging``) or ``--timeout``,
    would make it exit. Import it once here, before any test module does, with an empty
    command line."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        importlib.import_module("kserve")
    finally:
        sys.argv = argv


_import_kserve_with_a_clean_command_line()

#: ~37k transactions over 60 days: enough for every fraud scenario to show up (milliseconds).
SMALL_CONFIG = SimulationConfig(n_customers=300, n_terminals=600, n_days=60, seed=11)
#: ~4k transactions over 10 days: for tests that write files and validate them.
TINY_CONFIG = SimulationConfig(n_customers=200, n_terminals=400, n_days=10, seed=5)


@pytest.fixture(scope="session")
def small_simulation() -> Simulation:
    return simulate(SMALL_CONFIG)


@pytest.fixture(scope="session")
def tiny_simulation() -> Simulation:
    return simulate(TINY_CONFIG)


@pytest.fixture
def tiny_transactions(tiny_simulation: Simulation) -> pd.DataFrame:
    """A private copy of the tiny simulation's transactions, free to modify."""
    return tiny_simulation.transactions.copy()


@pytest.fixture(scope="session")
def tiny_daily_dir(tmp_path_factory: pytest.TempPathFactory, tiny_simulation: Simulation) -> Path:
    """The tiny simulation as daily parquet files (``2018-04-01.parquet`` ...). Read-only."""
    out = tmp_path_factory.mktemp("tiny_daily")
    config = tiny_simulation.config
    write_daily(tiny_simulation.transactions, out, config.start_date, config.n_days)
    return out


@dataclasses.dataclass(frozen=True)
class CliRun:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_vigil(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., CliRun]:
    """Run ``vigil ARGS...`` in-process through :func:`vigil_cli.cli.main`, the console script's
    entry point, so that exit codes and error printing are the real ones."""

    def run(*args: str | Path) -> CliRun:
        monkeypatch.setattr(sys, "argv", ["vigil", *map(str, args)])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run
