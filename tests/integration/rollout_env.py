"""Models and settings of the rollout tests (imported by their fixtures).

The champion is the serving tests' model; every candidate is a real LightGBM model registered
as a new version, whose defect (if any) is the model's own:

* ``good``, ``good_again`` — retrained on the same rows with a few more trees: similar scores;
* ``failing`` — trained with a multiclass objective: it loads and passes the registry's checks,
  but answers two probabilities per transaction, which the server cannot turn into a decision
  (every request a 5xx);
* ``slow`` — the champion trained on for tens of thousands of rounds at a learning rate that
  changes nothing: the champion's answers (to 1e-5), each request tens of milliseconds slower;
* ``absurd`` — trained on shuffled labels: it answers, fast, with scores that mean nothing.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import yaml

from feature_store.transforms import DEFAULT_SPEC
from rollout.traffic import request_bodies
from vigil import contract as c
from vigil.registry import Registry
from vigil.settings import Settings, load_settings
from vigil.training import train_lightgbm

THRESHOLD = 0.3
#: Transactions per request: enough scores per analysis window for the score checks.
PER_REQUEST = 32
SLOW_ROUNDS = 80_000


@dataclasses.dataclass(frozen=True)
class RolloutEnv:
    config: Path
    settings: Settings
    versions: dict[str, int]
    bodies: list[bytes]


def _register(registry: Registry, booster: lgb.Booster, alias: str | None = None) -> int:
    card = registry.register_model(
        booster, name="fraud", threshold=THRESHOLD, feature_service="fraud_v1",
        data_range=(date(2018, 4, 1), date(2018, 5, 6)), metrics={"auc_roc": 0.5},
        alias=alias,  # type: ignore[arg-type]
    )
    return card.version


def build(home: Path, *, redis_url: str, project: str, champion: lgb.Booster,
          features: pd.DataFrame, cutoff: pd.Timestamp, ports: dict[str, int],
          extra: dict[str, Any] | None = None) -> RolloutEnv:
    """Settings (a config file), the champion and the candidates registered, request bodies."""
    config = home / "vigil.yaml"
    rollout: dict[str, Any] = {
        "local": {"port": ports["frontend"], "prometheus_port": ports["prometheus"],
                  "pushgateway_port": ports["pushgateway"], "scrape_interval_s": 0.5,
                  "ready_timeout_s": 120},
        "min_requests": 10,
        "min_transactions": 100,
        # A fifth of these simulated transactions are frauds (2 of 300 terminals compromised
        # each day): a few thousand decisions per window differ by ~1.5 points by chance.
        "max_decision_rate_diff": 0.05,
        # ... and p99s of a few dozen requests jump by tens of milliseconds on a busy machine.
        "p99_slack_ms": 50,
        **(extra or {}),
    }
    config.write_text(yaml.safe_dump({
        "home": str(home),
        # Two shared cores run both servers, HAProxy, Prometheus and the clients: a generous
        # online-store budget keeps CPU hiccups from degrading (and so changing) decisions.
        "redis": {"url": redis_url, "timeout_ms": 250},
        "features": {"project": project},
        "rollout": rollout,
    }))
    settings = load_settings(config, env={})
    registry = Registry.from_settings(settings)
    train = features[features[c.TX_DATETIME] <= cutoff]
    names = DEFAULT_SPEC.features
    versions = {"champion": _register(registry, champion, "champion")}
    for name, rounds in (("good", 32), ("good_again", 34)):
        model = train_lightgbm(train, num_boost_round=rounds, feature_names=names,
                               params={"num_threads": 1, "min_child_samples": 20})
        versions[name] = _register(registry, model.booster)
    failing = train_lightgbm(train, num_boost_round=10, feature_names=names,
                             params={"num_threads": 1, "objective": "multiclass",
                                     "num_class": 2, "min_child_samples": 20})
    versions["failing"] = _register(registry, failing.booster)
    sample = train.sample(n=min(len(train), 2_000), random_state=0)
    slow = lgb.train(
        {"objective": "binary", "num_threads": 1, "num_leaves": 2, "learning_rate": 1e-9,
         "min_data_in_leaf": 20, "verbose": -1},
        lgb.Dataset(sample[list(names)].to_numpy(np.float64),
                    label=sample[c.TX_FRAUD].to_numpy(), feature_name=list(names)),
        num_boost_round=SLOW_ROUNDS, init_model=champion, keep_training_booster=False,
    )
    versions["slow"] = _register(registry, slow)
    shuffled = train.copy()
    shuffled[c.TX_FRAUD] = np.random.default_rng(0).permutation(shuffled[c.TX_FRAUD].to_numpy())
    absurd = train_lightgbm(shuffled, num_boost_round=30, feature_names=names,
                            params={"num_threads": 1, "min_child_samples": 20})
    versions["absurd"] = _register(registry, absurd.booster)
    # Every transaction after the cutoff, shuffled into requests: many distinct requests.
    live = features[features[c.TX_DATETIME] > cutoff].sample(frac=1.0, random_state=0)
    return RolloutEnv(config, settings, versions, request_bodies(live, PER_REQUEST))
