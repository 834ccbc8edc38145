"""Shared fixtures of the serving tests: a trained and registered model, online stores in real
Redis, real model servers on 127.0.0.1.

* ``serving_model`` (session): simulated transactions, batch features, a small LightGBM model
  registered as ``fraud`` champion in a temporary MLflow registry, and the Feast offline
  sources with history snapshots at ``cutoff`` (the transactions after it are "live").
* ``online_store(...)`` (factory): the snapshots materialized into a Redis under a project name
  unique to the call, so tests never see each other's appends nor other developers' keys;
  the keys are deleted at the end of the session.
* ``main_server`` (session): one ``vigil serve fraud`` on the shared Redis (127.0.0.1:6379) for
  the tests that do not need a pristine store.
* ``redis_process`` (factory): a private ``redis-server`` on a free port, which a test may
  pause (SIGSTOP), stop and restart.

Every process a fixture starts is stopped by it, by PID, with a kill fallback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import lightgbm as lgb
import pandas as pd
import pytest
import redis
import yaml

from feature_store.config import StoreConfig
from feature_store.jobs import featurize, materialize
from feature_store.names import FEATURE_SERVICE
from feature_store.online import delete_project_keys, redis_client
from feature_store.transforms import DEFAULT_SPEC
from inference.client import ServerProcess, free_port, start_server
from vigil import contract as c
from vigil.data.simulate import SimulationConfig, simulate
from vigil.registry import ModelCard, Registry
from vigil.settings import load_settings
from vigil.training import train_lightgbm

SHARED_REDIS_URL = os.environ.get("VIGIL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SERVING_SIMULATION = SimulationConfig(n_customers=150, n_terminals=300, n_days=40, seed=3)
#: Decision threshold registered with the test model.
THRESHOLD = 0.3


@dataclasses.dataclass(frozen=True)
class ServingModel:
    home: Path
    transactions: pd.DataFrame
    #: Batch features of every transaction (the parity reference).
    features: pd.DataFrame
    #: History snapshots are as of this instant; later transactions are "live" traffic.
    cutoff: pd.Timestamp
    card: ModelCard
    booster: lgb.Booster

    @property
    def live(self) -> pd.DataFrame:
        """Transactions of the day after the cutoff, in event order."""
        tx = self.transactions
        keep = (tx[c.TX_DATETIME] > self.cutoff) & (
            tx[c.TX_DATETIME] <= self.cutoff + pd.Timedelta(days=1)
        )
        return tx[keep].sort_values([c.TX_DATETIME, c.TRANSACTION_ID]).reset_index(drop=True)


@dataclasses.dataclass(frozen=True)
class OnlineStore:
    project: str
    redis_url: str
    config: Path


def write_config(path: Path, *, home: Path, project: str, redis_url: str,
                 serving: dict[str, Any] | None = None) -> Path:
    config: dict[str, Any] = {
        "home": str(home),
        "redis": {"url": redis_url},
        "features": {"project": project},
    }
    if serving:
        config["serving"] = serving
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def serving_model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    home = tmp_path_factory.mktemp("serving_home")
    sim = simulate(SERVING_SIMULATION)
    transactions = sim.transactions
    cutoff = pd.Timestamp(SERVING_SIMULATION.start_date) + pd.Timedelta(days=35)
    settings = load_settings(env={"VIGIL_HOME": str(home)})
    features, _ = featurize(transactions, home / "features",
                            store=StoreConfig.from_settings(settings),
                            cutoff=cutoff.to_pydatetime())
    train = features[features[c.TX_DATETIME] <= cutoff]
    trained = train_lightgbm(train, num_boost_round=30, feature_names=DEFAULT_SPEC.features,
                             params={"num_threads": 1, "min_child_samples": 20})
    card = Registry.from_settings(settings).register_model(
        trained.booster,
        name="fraud",
        threshold=THRESHOLD,
        feature_service=FEATURE_SERVICE,
        data_range=(SERVING_SIMULATION.start_date, date(2018, 5, 6)),
        metrics={"auc_roc": 0.5},
        alias="champion",
    )
    return ServingModel(home, transactions, features, cutoff, card, trained.booster)


@pytest.fixture(scope="session")
def online_store(
    serving_model: ServingModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., OnlineStore]]:
    """``online_store(redis_url=..., serving={...})``: a freshly materialized store."""
    created: list[OnlineStore] = []

    def make(redis_url: str = SHARED_REDIS_URL, serving: dict[str, Any] | None = None,
             materialized: bool = True) -> OnlineStore:
        project = f"vigil_test_{uuid.uuid4().hex[:12]}"
        folder = tmp_path_factory.mktemp(project)
        config = write_config(folder / "vigil.yaml", home=serving_model.home, project=project,
                              redis_url=redis_url, serving=serving)
        store = OnlineStore(project, redis_url, config)
        created.append(store)
        if materialized:
            materialize(StoreConfig.from_settings(load_settings(config)))
        return store

    yield make
    for store in created:
        with contextlib.suppress(redis.RedisError):  # a private redis-server already gone
            client = redis_client(store.redis_url, 10.0)
            try:
                delete_project_keys(client, store.project)
            finally:
                client.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers (``inference.client.start_server`` arguments); stopped after the test."""
    servers: list[ServerProcess] = []

    def make(**kwargs: Any) -> ServerProcess:
        kwargs.setdefault("log_path", tmp_path / f"server-{len(servers)}.log")
        server = start_server(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(timeout_s=30)


@pytest.fixture(scope="session")
def main_store(online_store: Callable[..., OnlineStore]) -> OnlineStore:
    return online_store()


@pytest.fixture(scope="session")
def main_server(
    main_store: OnlineStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = start_server(config=main_store.config,
                          log_path=tmp_path_factory.mktemp("main_server") / "server.log")
    yield server
    server.stop(timeout_s=30)


class RedisProcess:
    """A private redis-server on 127.0.0.1 (no persistence) that tests stop and restart."""

    def __init__(self, port: int, workdir: Path):
        self.port = port
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGCONT)  # a paused server cannot exit
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[Callable[[], RedisProcess]]:
    started: list[RedisProcess] = []

    def make() -> RedisProcess:
        process = RedisProcess(free_port(), tmp_path)
        process.start()
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


def _instance(row: pd.Series | dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A V1 instance from a raw transaction row."""
    body = {
        c.TRANSACTION_ID: int(row[c.TRANSACTION_ID]),
        c.TX_DATETIME: pd.Timestamp(row[c.TX_DATETIME]).isoformat(),
        c.CUSTOMER_ID: int(row[c.CUSTOMER_ID]),
        c.TERMINAL_ID: int(row[c.TERMINAL_ID]),
        c.TX_AMOUNT: float(row[c.TX_AMOUNT]),
    }
    body.update(overrides)
    return body


def _read_inference_log(root: Path) -> pd.DataFrame:
    files = sorted(root.rglob("*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@pytest.fixture(scope="session")
def tx_instance() -> Callable[..., dict[str, Any]]:
    """``tx_instance(row, **overrides)``: a V1 instance from a raw transaction row."""
    return _instance


@pytest.fixture(scope="session")
def read_log() -> Callable[[Path], pd.DataFrame]:
    """``read_log(root)``: every row of the parquet inference log under ``root``."""
    return _read_inference_log


@pytest.fixture(scope="session")
def feature_names() -> list[str]:
    return list(DEFAULT_SPEC.features)
