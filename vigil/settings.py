"""Vigil's settings: one strict model, filled from a YAML file and the environment.

Where a value comes from, highest precedence first:

1. environment variables: ``VIGIL_`` + the field path in upper case, nested levels joined by
   ``__`` (``VIGIL_HOME``, ``VIGIL_REDIS__URL``, ``VIGIL_SERVING__MAX_INSTANCES``); MLflow's own
   ``MLFLOW_TRACKING_URI`` sets ``registry.tracking_uri`` below ``VIGIL_REGISTRY__TRACKING_URI``;
2. the YAML file named by ``--config`` or ``VIGIL_CONFIG`` (``./vigil.yaml`` when present), with
   ``${VAR}`` and ``${VAR:-default}`` expanded;
3. the defaults below, which run everything on 127.0.0.1 with state under ``./.vigil``.

Strict everywhere: an unknown key in the file, an unknown ``VIGIL_<SECTION>__<FIELD>`` variable
or a value of the wrong type is a :class:`~vigil.errors.ConfigError` naming the file or the
variable and the field. On Kubernetes every setting arrives as an environment variable (from a
ConfigMap); secrets (the serving bearer token, passwords inside URLs) only ever come from the
environment (Kubernetes Secrets). Loading has no side effects: nothing is created or connected.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from vigil.errors import ConfigError

ENV_PREFIX: Final = "VIGIL_"
ENV_NESTED: Final = "__"
#: Names the settings file; not a setting itself.
CONFIG_ENV: Final = "VIGIL_CONFIG"
#: MLflow's own variable for the tracking URI, honoured below VIGIL_REGISTRY__TRACKING_URI.
MLFLOW_TRACKING_URI_ENV: Final = "MLFLOW_TRACKING_URI"
DEFAULT_CONFIG_FILE: Final = "vigil.yaml"

#: The environment :func:`load_settings` reads (None: this process's).
_ENVIRONMENT: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "vigil_settings_environment", default=None
)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: A cluster node's address.
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")


class RedisSettings(StrictModel):
    #: redis://[:password@]host:port/db of the online store. On a cluster only its password
    #: and scheme (``rediss``: TLS) are used; its database must be 0.
    url: str = "redis://127.0.0.1:6379/0"
    #: ``redis``: one server (or a primary with replicas) at ``url``; ``redis_cluster``: Redis
    #: Cluster, discovered from ``cluster_nodes`` (Feast's ``redis_type``).
    type: Literal["redis", "redis_cluster"] = "redis"
    #: host:port of cluster nodes to discover the cluster from (one reachable node is enough;
    #: list several). Environment: comma-separated.
    cluster_nodes: Annotated[tuple[str, ...], NoDecode] = ()
    #: Replicas that must confirm each near-real-time append (Redis ``WAIT``) before it counts
    #: as done; an unconfirmed append stays queued and is retried, so a failover loses none.
    #: Unset: 1 on a cluster, 0 on one server.
    append_replicas: int | None = Field(default=None, ge=0, le=16)
    #: Budget of one online feature read on the serving path; beyond it, serving degrades.
    timeout_ms: float = Field(default=20.0, gt=0, le=10_000)
    #: Socket timeout of the near-real-time appends (off the response path).
    append_timeout_ms: float = Field(default=1_000.0, gt=0, le=60_000)
    #: Most entries one entity's online history keeps, the newest: a customer's transactions,
    #: a terminal's labels. Bounds the work of every read and append of one entity, however
    #: busy (a card-testing attack); an entity with more in its windows' horizon has features
    #: over these only (README, "Bounded work per card").
    history_max_entries: int = Field(default=1_000, ge=16, le=100_000)
    #: Transactions per call of the in-Redis append script (larger backlogs are split): with
    #: the history bound, how long one call can hold Redis.
    append_max_events: int = Field(default=32, ge=1, le=1_000)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        """An empty URL (e.g. an empty Secret value) is a configuration error, named here,
        not a traceback from the Redis client."""
        if not value.startswith(("redis://", "rediss://", "unix://")):
            shown = repr(value) if value else "empty"
            raise ValueError(f"{shown}: expected redis://[:password@]host:port/db "
                             "(or rediss://, unix://)")
        return value

    @field_validator("append_max_events")
    @classmethod
    def _events_within_history(cls, value: int, info: ValidationInfo) -> int:
        bound = info.data.get("history_max_entries")
        if bound is not None and value > bound:
            raise ValueError(f"must not exceed history_max_entries ({bound})")
        return value

    @field_validator("cluster_nodes", mode="before")
    @classmethod
    def _parse_nodes(cls, value: Any) -> Any:
        """``h1:7000,h2:7000`` (or ``[...]``, ``(...)``, items quoted) from a variable, or a
        list from a file."""
        if isinstance(value, str):
            parts = (part.strip().strip("'\"") for part in value.strip().strip("[]()").split(","))
            return tuple(part for part in parts if part)
        return value

    @field_validator("cluster_nodes")
    @classmethod
    def _check_nodes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for node in value:
            match = _HOST_PORT.match(node)
            if match is None or not 1 <= int(match["port"]) <= 65535:
                raise ValueError(f"cluster node {node!r}: expected host:port (port 1..65535)")
        return value

    @model_validator(mode="after")
    def _check_type(self) -> RedisSettings:
        if self.type == "redis_cluster":
            if not self.cluster_nodes:
                raise ValueError("type redis_cluster needs cluster_nodes (host:port, ...)")
            db = urlparse(self.url).path.lstrip("/") or "0"
            if db != "0":
                raise ValueError(f"type redis_cluster: url's database must be 0, got {db!r} "
                                 "(a cluster has one database)")
        elif self.cluster_nodes:
            raise ValueError("cluster_nodes is set but type is 'redis': set type redis_cluster "
                             "or remove cluster_nodes")
        return self

    @property
    def replicas_per_append(self) -> int:
        """``append_replicas``, or its default: 1 on a cluster, 0 on one server."""
        if self.append_replicas is not None:
            return self.append_replicas
        return 1 if self.type == "redis_cluster" else 0

    @property
    def online_url(self) -> str:
        """The online store's address as :func:`feature_store.online.redis_client` takes it:
        ``url`` for one server; for a cluster ``redis+cluster://[:password@]h1:p1,h2:p2``
        (``rediss+cluster`` for TLS)."""
        if self.type == "redis":
            return self.url
        parsed = urlparse(self.url)
        scheme = "rediss" if parsed.scheme == "rediss" else "redis"
        auth = ""
        if parsed.password is not None:
            auth = f"{parsed.username or ''}:{parsed.password}@"
        return f"{scheme}+cluster://{auth}{','.join(self.cluster_nodes)}"


class RegistrySettings(StrictModel):
    #: Any MLflow tracking URI; default: a SQLite file under ``home``.
    tracking_uri: str | None = None
    #: The registered model that pipelines train and servers serve.
    model_name: str = Field(default="fraud", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$")


class FeatureSettings(StrictModel):
    """Where features live. What they are is code (``feature_store``), versioned as fraud_v1."""

    #: Feast project name (namespaces the keys of the online store).
    project: str = Field(default="vigil", pattern=r"^[a-z][a-z0-9_]*$")


class ServingSettings(StrictModel):
    #: Address ``vigil serve`` binds: 127.0.0.1 on a laptop, 0.0.0.0 in a pod.
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    #: Largest request body; larger ones get 413.
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    #: Transactions per request.
    max_instances: int = Field(default=1_000, ge=1, le=100_000)
    #: How far a TX_DATETIME may be ahead of the server clock.
    max_future_skew_s: float = Field(default=300.0, ge=0)
    #: Transactions per model call (concurrent requests are scored together up to this; a
    #: larger request is scored a slice per call, other requests' in between).
    max_batch: int = Field(default=256, ge=1, le=100_000)
    #: Transactions of one customer per model call: a hot card's backlog is scored a slice
    #: per call, so it cannot make other cards' calls slow.
    max_batch_per_customer: int = Field(default=16, ge=1, le=100_000)
    #: Transactions admitted and not yet scored. A request that would go beyond gets 429 with
    #: Retry-After (one request always fits an empty queue).
    max_queued_transactions: int = Field(default=2_048, ge=1, le=1_000_000)
    #: Transactions of one customer admitted and not yet scored; beyond, 429: a card sending
    #: faster than it is scored is shed, other cards are not.
    max_queued_per_customer: int = Field(default=64, ge=1, le=1_000_000)
    #: Retry-After (seconds) of a request shed with 429.
    shed_retry_after_s: int = Field(default=1, ge=1, le=3_600)
    #: A connection must send a request's headers within this many seconds of its first byte
    #: (a client sending half a header is cut off).
    header_timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: Idle connections (none sent yet, or between requests) are closed after this many
    #: seconds; longer than the idle timeout of the proxies in front (Istio/Envoy: 60 s), as
    #: KServe's server does, so that a proxy never reuses a connection closed under it.
    idle_timeout_s: int = Field(default=65, ge=1, le=3_600)
    #: After an online-store failure, score with default features this long before retrying.
    retry_after_s: float = Field(default=0.5, gt=0, le=60)
    #: Inference log folder or object-storage URI (s3://..., gs://...); default:
    #: ``<home>/inference_log/<model>``.
    log_root: str | None = None
    #: Inference log rotation: a new parquet file after this many rows or seconds.
    log_rotate_rows: int = Field(default=50_000, ge=1)
    log_rotate_seconds: float = Field(default=300.0, gt=0)
    #: Scored rows reach the inference log's journal at least this often: a killed process
    #: loses at most the rows of its last this-many seconds (README, "Inference log").
    log_flush_s: float = Field(default=0.5, gt=0, le=60)
    #: Local folder of the inference log's journal; default: ``_journal`` under a local
    #: ``log_root``, ``<home>/inference_journal/<model>`` for an object-storage one.
    log_journal_dir: str | None = None
    #: One log line per HTTP request (the inference log records every scored transaction).
    access_log: bool = False
    #: Seconds in-flight requests get to finish on SIGTERM.
    grace_period_s: int = Field(default=30, ge=0, le=3600)


_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class RolloutLocalSettings(StrictModel):
    """The local rollout stack (``vigil rollout stack up``): HAProxy in front of two
    ``vigil serve`` processes, Prometheus, a Pushgateway; all on 127.0.0.1."""

    #: HAProxy's frontend: clients call the model here during and after rollouts.
    port: int = Field(default=8090, ge=1, le=65535)
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    pushgateway_port: int = Field(default=9091, ge=1, le=65535)
    #: How often Prometheus scrapes the servers; an analysis window needs a few scrapes.
    scrape_interval_s: float = Field(default=1.0, ge=0.1, le=60)
    #: Seconds a model server gets to load its model and become ready.
    ready_timeout_s: float = Field(default=180.0, gt=0, le=3600)


class RolloutKServeSettings(StrictModel):
    """The InferenceService the ``kserve`` target patches (and the ``helm`` target's chart
    renders), and how Prometheus tells its pods apart."""

    namespace: str = Field(default="default", pattern=_DNS_LABEL)
    #: Name of the InferenceService.
    name: str = Field(default="fraud", pattern=_DNS_LABEL)
    #: ``Standard`` (raw deployments; canary as ``spec.canary``, KServe >= 0.20) or
    #: ``Knative`` (``spec.predictor.canaryTrafficPercent``).
    mode: Literal["Standard", "Knative"] = "Standard"
    #: Predictor container that runs ``vigil serve`` (its ``--version`` is set); default: the
    #: first container.
    container: str | None = None
    #: kubeconfig file; default: the pod's service account, else ``~/.kube/config``.
    kubeconfig: str | None = None
    #: PromQL label matchers selecting one model version's pods; ``{namespace}``, ``{name}``
    #: and ``{version}`` are filled in. The predictor pods carry the label
    #: ``vigil.io/model-version``; the PodMonitor relabels it to ``vigil_model_version``.
    selector: str = 'namespace="{namespace}",vigil_model_version="{version}"'
    #: Seconds to wait for the InferenceService to be Ready after a promotion.
    ready_timeout_s: float = Field(default=600.0, gt=0, le=7200)


class RolloutHelmSettings(StrictModel):
    """The Helm release the ``helm`` target upgrades step by step."""

    release: str = Field(default="vigil", pattern=_DNS_LABEL)
    #: Chart path or reference given to ``helm upgrade``.
    chart: str = "charts/vigil"
    #: Namespace of the release; default: helm's own (the kube context's).
    namespace: str | None = Field(default=None, pattern=_DNS_LABEL)
    #: The helm program; when it is not on PATH the commands are printed instead of run.
    binary: str = "helm"


class RolloutSettings(StrictModel):
    """Canary rollouts (``vigil rollout``): steps, analysis bounds, where they act."""

    #: Where ``vigil rollout`` acts by default: ``local`` (HAProxy), ``kserve`` (patch the
    #: InferenceService), ``helm`` (upgrade the chart's values).
    target: Literal["local", "kserve", "helm"] = "local"
    #: Canary traffic percentages, one analysis interval each (JSON list or ``10,25,50,100``).
    steps: Annotated[tuple[int, ...], NoDecode] = (10, 25, 50, 100)
    #: Seconds of traffic per step; the analysis looks at this window.
    interval_s: float = Field(default=60.0, gt=0, le=86_400)
    #: Failed checks (all steps together) that roll the canary back.
    threshold: int = Field(default=3, ge=1, le=1000)
    #: ``--shadow``: analysis intervals of mirrored traffic before the first step.
    shadow_intervals: int = Field(default=3, ge=1, le=1000)
    #: Prometheus HTTP API the analysis queries; default: the local stack's (required by the
    #: kserve and helm targets).
    prometheus_url: str | None = None
    #: Pushgateway that receives the controller's metrics; default: the local stack's (none for
    #: the other targets).
    pushgateway_url: str | None = None
    #: Timeout of one Prometheus query.
    query_timeout_s: float = Field(default=5.0, gt=0, le=120)
    #: Rollout state and history; default ``<home>/rollouts``.
    state_dir: Path | None = None
    #: Fewer canary requests (or scored transactions) in a window: no evidence, the check fails.
    min_requests: int = Field(default=20, ge=1)
    min_transactions: int = Field(default=100, ge=1)
    #: Share of canary requests answered without a 5xx.
    min_success_rate: float = Field(default=0.99, ge=0, le=1)
    #: Canary p99 latency bound, absolute ...
    max_p99_ms: float = Field(default=500.0, gt=0)
    #: ... and relative: canary p99 <= primary p99 * max_p99_ratio + p99_slack_ms.
    max_p99_ratio: float = Field(default=1.5, ge=1)
    p99_slack_ms: float = Field(default=10.0, ge=0)
    #: Canary's share of degraded transactions minus the primary's.
    max_degraded_increase: float = Field(default=0.01, ge=0, le=1)
    #: Population stability index of the canary's scores against the primary's.
    max_score_psi: float = Field(default=0.2, gt=0)
    #: |canary's share of fraud decisions - primary's|.
    max_decision_rate_diff: float = Field(default=0.02, ge=0, le=1)
    #: Shadow mode: share of mirrored transactions whose decision equals the primary's.
    min_decision_agreement: float = Field(default=0.95, ge=0, le=1)
    local: RolloutLocalSettings = RolloutLocalSettings()
    kserve: RolloutKServeSettings = RolloutKServeSettings()
    helm: RolloutHelmSettings = RolloutHelmSettings()

    @field_validator("steps", mode="before")
    @classmethod
    def _parse_steps(cls, value: Any) -> Any:
        """``10,25,50,100``, ``[10, 25]`` or ``(10, 25)`` from a variable or a file."""
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            try:
                return tuple(int(part) for part in text.split(",") if part.strip())
            except ValueError as e:
                raise ValueError(f"steps: comma-separated percentages, got {value!r}") from e
        return value

    @field_validator("steps")
    @classmethod
    def _check_steps(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("steps: at least one traffic percentage")
        if any(not 1 <= p <= 100 for p in value):
            raise ValueError(f"steps: percentages within 1..100, got {list(value)}")
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"steps: strictly increasing, got {list(value)}")
        return value


class MonitoringSettings(StrictModel):
    """The drift job (``vigil drift``) and where monitoring jobs push their metrics."""

    #: Pushgateway the drift job pushes ``vigil_drift_*`` to; none: nothing is pushed.
    pushgateway_url: str | None = None
    #: Default window of the inference log the drift job compares: ``<n>d``/``<n>h`` (the last
    #: n days/hours up to the newest logged transaction), a day or ``day..day``.
    drift_window: str = "1d"
    #: Default reference: parquet features of the served model's training set (a file or a
    #: folder; the pipeline's dataset, ``vigil featurize --out``, or an inference-log folder).
    drift_reference: str | None = None
    #: Reports (``report.html``, ``drift.json``); default ``<home>/drift``.
    drift_out_dir: Path | None = None
    #: Evidently stat test for every column (``wasserstein``, ``ks``, ``psi``, ``jensenshannon``,
    #: ...); default: Evidently's choice per column (module ``monitoring.drift``).
    drift_method: str | None = None
    #: Threshold of that test; default: the test's own (0.1 for distances, 0.05 for p-values).
    drift_threshold: float | None = Field(default=None, gt=0)
    #: Share of drifted features at which the data set counts as drifted (Evidently's 0.5).
    drift_share: float = Field(default=0.5, gt=0, le=1)
    #: The model's key features are the fewest that together carry this share of its LightGBM
    #: gain; the drift of any one of them is key feature drift, which raises
    #: ``VigilDriftDetected`` like data-set drift (Vigil's rule; 0: no key features).
    drift_key_gain_share: float = Field(default=0.5, ge=0, le=1)
    #: Fewer rows than this on either side: "not enough data", nothing compared.
    drift_min_rows: int = Field(default=1_000, ge=1)
    #: Live performance (``vigil performance``): the cost of one FRAUD decision (a review);
    #: a missed fraud costs its amount.
    alert_cost: float = Field(default=5.0, ge=0)
    #: Fewer labelled served transactions (or one class only): "not enough labels".
    live_min_labelled: int = Field(default=1_000, ge=1)
    #: Pictures and JSON of ``vigil performance``; default ``<home>/performance``.
    live_out_dir: Path | None = None


class PipelinesSettings(StrictModel):
    """Where training pipelines run when not on this machine."""

    #: Kubeflow Pipelines endpoint (http(s)://...) of ``vigil schedule`` and of the retrain
    #: webhook; none: ``vigil schedule`` needs ``--host``, the webhook runs kfp.local.
    kfp_host: str | None = Field(default=None, pattern=r"^https?://")
    #: KFP experiment of scheduled and webhook-started runs.
    experiment: str = Field(default="vigil", min_length=1)


class Settings(BaseSettings):
    """All of Vigil's settings (see the module docstring for where they come from)."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        case_sensitive=False,
    )

    #: Local state: offline store parquet, Feast registry, MLflow database, inference logs.
    home: Path = Path(".vigil")
    redis: RedisSettings = RedisSettings()
    registry: RegistrySettings = RegistrySettings()
    features: FeatureSettings = FeatureSettings()
    serving: ServingSettings = ServingSettings()
    rollout: RolloutSettings = RolloutSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    pipelines: PipelinesSettings = PipelinesSettings()

    @property
    def tracking_uri(self) -> str:
        return self.registry.tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def drift_out_dir(self) -> Path:
        return (self.monitoring.drift_out_dir or self.home / "drift").resolve()

    @property
    def live_out_dir(self) -> Path:
        return (self.monitoring.live_out_dir or self.home / "performance").resolve()

    @property
    def rollout_state_dir(self) -> Path:
        return (self.rollout.state_dir or self.home / "rollouts").resolve()

    @property
    def inference_log_root(self) -> str:
        name = self.registry.model_name
        return self.serving.log_root or str((self.home / "inference_log" / name).resolve())

    @property
    def inference_journal_dir(self) -> str:
        """The inference log's local journal (see ``serving.log_journal_dir``)."""
        if self.serving.log_journal_dir:
            return str(Path(self.serving.log_journal_dir).expanduser().resolve())
        root = self.inference_log_root
        if "://" in root and not root.startswith("file://"):
            return str((self.home / "inference_journal" / self.registry.model_name).resolve())
        return str(Path(root.removeprefix("file://")).expanduser().resolve() / "_journal")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment over MLflow's variable over the file (passed as init values).
        return _EnvSource(settings_cls), _MlflowUriSource(settings_cls), init_settings


def _environment() -> Mapping[str, str]:
    env = _ENVIRONMENT.get()
    return os.environ if env is None else env


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over :func:`_environment`."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            _environment(), self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class _MlflowUriSource(PydanticBaseSettingsSource):
    """``MLFLOW_TRACKING_URI`` as ``registry.tracking_uri``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        uri = _environment().get(MLFLOW_TRACKING_URI_ENV)
        return {"registry": {"tracking_uri": uri}} if uri else {}


def env_name(*path: str) -> str:
    """The environment variable of a settings field, e.g. ``env_name("redis", "url")`` is
    ``VIGIL_REDIS__URL``."""
    return ENV_PREFIX + ENV_NESTED.join(p.upper() for p in path)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` exactly in another process (a
    pipeline step, a container): every field, nested ones joined by ``__``."""
    out: dict[str, str] = {}

    def walk(model: BaseModel, path: tuple[str, ...]) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(value, (*path, name))
            elif value is not None:
                out[env_name(*path, name)] = str(value)

    walk(settings, ())
    return out


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; an unset variable without default is an error."""
    env = os.environ if env is None else env

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set and has no default")

    return _ENV_REF.sub(replace, text)


def config_path(path: str | Path | None, env: Mapping[str, str]) -> Path | None:
    """The settings file: ``path``, else ``$VIGIL_CONFIG``, else ``./vigil.yaml`` if present."""
    if path is not None:
        return Path(path)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return Path(DEFAULT_CONFIG_FILE) if Path(DEFAULT_CONFIG_FILE).is_file() else None


def read_config_file(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    try:
        text = path.read_text()
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
    return loaded or {}


def _setting_variables(env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Field path -> variable name of every environment variable that addresses a setting:
    ``VIGIL_<FIELD>`` for a top-level field, any ``VIGIL_<A>__<B>...``; unknown paths raise."""
    top = Settings.model_fields
    out: dict[tuple[str, ...], str] = {}
    for name in env:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        rest = upper[len(ENV_PREFIX):].lower()
        if ENV_NESTED not in rest:
            if rest in top and not _is_section(rest):
                out[(rest,)] = name
            continue  # other VIGIL_* variables (VIGIL_SERVING_TOKEN, ...) are not settings
        path = tuple(rest.split(ENV_NESTED))
        model: Any = Settings
        for i, part in enumerate(path):
            is_model = isinstance(model, type) and issubclass(model, BaseModel)
            fields = model.model_fields if is_model else {}
            if part not in fields:
                where = ".".join(path[:i]) or "settings"
                known = ", ".join(env_name(*path[:i], f) for f in fields)
                raise ConfigError(
                    f"environment variable {name}: {where} has no field {part!r} "
                    f"(known: {known})"
                )
            model = fields[part].annotation
        out[path] = name
    return out


def _is_section(name: str) -> bool:
    annotation = Settings.model_fields[name].annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def load_settings(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from ``path`` (see :func:`config_path`) and the environment ``env`` (default:
    this process's)."""
    env = dict(os.environ) if env is None else dict(env)
    file = config_path(path, env)
    data = read_config_file(file, env) if file is not None else {}
    variables = _setting_variables(env)
    token = _ENVIRONMENT.set(env)
    try:
        return Settings(**data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(str(p) for p in err["loc"])
            variable = next(
                (v for p, v in variables.items() if loc[: len(p)] == p), None
            )
            if variable is None and loc[:2] == ("registry", "tracking_uri"):
                variable = MLFLOW_TRACKING_URI_ENV if env.get(MLFLOW_TRACKING_URI_ENV) else None
            source = f"environment variable {variable}" if variable else str(file or "defaults")
            problems.append(f"{source}: {'.'.join(loc)}: {err['msg']}")
        raise ConfigError("; ".join(problems)) from e
    finally:
        _ENVIRONMENT.reset(token)


def with_overrides(
    settings: Settings, source: str, **sections: Mapping[str, Any]
) -> Settings:
    """``settings`` with some fields of its sections replaced, e.g. by command-line flags:
    ``with_overrides(s, "command line", serving={"port": 9000})``. The new values win over the
    environment and the file, and are checked like them: a bad one is a
    :class:`~vigil.errors.ConfigError` naming ``source`` and the field."""
    updates: dict[str, BaseModel] = {}
    problems = []
    for section, values in sections.items():
        current = getattr(settings, section, None)
        if not isinstance(current, BaseModel):
            raise ConfigError(f"{source}: settings have no section {section!r}")
        try:
            updates[section] = type(current).model_validate({**current.model_dump(), **values})
        except ValidationError as e:
            problems += [
                f"{source}: {'.'.join((section, *map(str, err['loc'])))}: {err['msg']}"
                for err in e.errors()
            ]
    if problems:
        raise ConfigError("; ".join(problems))
    return settings.model_copy(update=updates)
