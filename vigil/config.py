"""Typed configuration: YAML, ``${VAR}`` / ``${VAR:-default}`` expansion, strict pydantic models.

Where settings come from, in order of precedence:
1. environment overrides (``VIGIL_HOME``, ``VIGIL_REDIS_URL``, ``MLFLOW_TRACKING_URI``,
   ``VIGIL_FEATURES_PROJECT``),
2. the YAML file named by ``--config`` or ``VIGIL_CONFIG`` (``./vigil.yaml`` when present),
3. the defaults below, which run everything on 127.0.0.1 with state under ``./.vigil``.

Secrets (the serving bearer token) are read from the environment only, never from files.
Loading has no side effects: nothing is created or connected to.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vigil.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(StrictModel):
    #: redis://host:port/db; the online store of the feature store.
    url: str = "redis://127.0.0.1:6379/0"
    #: Budget for one online feature read on the serving path; beyond it, degrade.
    timeout_ms: float = Field(default=20.0, gt=0, le=10_000)


class RegistrySettings(StrictModel):
    #: Any MLflow tracking URI; default: a SQLite file under ``home``.
    tracking_uri: str | None = None
    model_name: str = "fraud"


class FeatureSettings(StrictModel):
    """Where features live. What they are is code (``feature_store``), versioned as fraud_v1."""

    #: Feast project name (namespaces keys in the online store).
    project: str = Field(default="vigil", pattern=r"^[a-z][a-z0-9_]*$")


class ServingSettings(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    #: Inference log rotation: a new parquet file after this many rows or seconds.
    log_rotate_rows: int = Field(default=50_000, ge=1)
    log_rotate_seconds: float = Field(default=300.0, gt=0)


class Settings(StrictModel):
    #: Local state: offline store parquet, Feast registry, MLflow database, inference logs.
    home: Path = Path(".vigil")
    redis: RedisSettings = RedisSettings()
    registry: RegistrySettings = RegistrySettings()
    features: FeatureSettings = FeatureSettings()
    serving: ServingSettings = ServingSettings()

    @property
    def tracking_uri(self) -> str:
        return self.registry.tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"


def expand_env(text: str, env: dict[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""
    env = dict(os.environ) if env is None else env

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set and has no default")

    return _ENV_REF.sub(replace, text)


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if env is None else env
    if path is None:
        path = env.get("VIGIL_CONFIG") or ("vigil.yaml" if Path("vigil.yaml").is_file() else None)
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config: {e.strerror}") from e
        try:
            loaded = yaml.safe_load(expand_env(text, env))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    overrides = {
        ("home",): env.get("VIGIL_HOME"),
        ("redis", "url"): env.get("VIGIL_REDIS_URL"),
        ("registry", "tracking_uri"): env.get("MLFLOW_TRACKING_URI"),
        ("features", "project"): env.get("VIGIL_FEATURES_PROJECT"),
    }
    for keys, value in overrides.items():
        if value:
            node = data
            for key in keys[:-1]:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{source}: {key} must be a mapping")
            node[keys[-1]] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"{source}: {problems}") from e
