"""The ``fraud`` predictor: a ``kserve.Model`` over the registry's model and the online store.

* :meth:`FraudModel.load` loads the registry's ``champion`` (or a given version) — LightGBM text
  format, sha256 checked against the registry before parsing, never a pickle — and connects
  the online store. The model becomes *ready* only once the online store answers too (a
  background thread keeps trying); until then predictions and readiness probes answer 503.
* ``preprocess`` validates the request (V1 dict, V2 request parsed by the server, or any
  ``kserve.InferRequest``, gRPC included) into transactions (:mod:`inference.schema`);
* ``predict`` scores them through the adaptive batcher (:mod:`inference.batching`,
  :mod:`inference.scoring`);
* ``postprocess`` answers in the request's protocol: score, decision at the registered
  threshold, model version, feature service, ``degraded`` and per-transaction freshness of the
  customer and terminal features.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import numpy as np
import orjson
import redis
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.protocol.infer_type import RequestedOutput
from prometheus_client import Counter
from redis.cluster import RedisCluster

from feature_store.online import HistoryLimits
from inference.batching import MicroBatcher, Overloaded
from inference.log import InferenceLog
from inference.online import serving_histories
from inference.schema import (
    ALL_FIELDS,
    V2_OUTPUTS,
    Limits,
    RequestError,
    ScoringRequest,
    decode_v2,
    new_id,
    parse_v1,
)
from inference.scoring import Appender, ScoredTransaction, Scorer
from monitoring import metrics as m
from vigil import contract as c
from vigil.registry import CHAMPION, LoadedModel, ModelCard, Registry
from vigil.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "lightgbm"


@dataclasses.dataclass(frozen=True)
class ServingOptions:
    """Everything the predictor needs, taken from Vigil's settings by :meth:`from_settings`
    (no defaults of its own: :mod:`vigil.settings` holds them)."""

    model_name: str
    #: Registry version to serve; None: the champion.
    version: int | None
    #: The online store's address (a ``redis+cluster://`` one on Redis Cluster).
    redis_url: str
    #: Budget of one online read on the response path.
    redis_timeout_s: float
    #: Socket timeout of the near-real-time appends (off the response path).
    append_timeout_s: float
    #: Replicas that must confirm each append (Redis WAIT); unconfirmed appends are retried.
    append_replicas: int
    project: str
    #: Inference log folder or object-storage URI.
    log_root: str
    log_rotate_rows: int
    log_rotate_seconds: float
    limits: Limits
    #: After an online-store failure, score with defaults this long before asking again.
    retry_after_s: float
    #: Transactions per model call, and of one customer per model call.
    max_batch: int
    max_batch_per_customer: int
    #: Admission: transactions queued in all, and of one customer; Retry-After when shed.
    max_queued_transactions: int
    max_queued_per_customer: int
    shed_retry_after_s: int
    #: The bound of one entity's online history and of one append call.
    history: HistoryLimits
    #: The inference log's journal: its folder and flush interval.
    log_journal_dir: str
    log_flush_s: float

    @classmethod
    def from_settings(cls, settings: Settings, *, version: int | None = None) -> ServingOptions:
        """Options of serving ``settings.registry.model_name`` (``version``, or the champion)."""
        serving, store = settings.serving, settings.redis
        return cls(
            model_name=settings.registry.model_name,
            version=version,
            redis_url=store.online_url,
            redis_timeout_s=store.timeout_ms / 1000,
            append_timeout_s=store.append_timeout_ms / 1000,
            append_replicas=store.replicas_per_append,
            project=settings.features.project,
            log_root=settings.inference_log_root,
            log_rotate_rows=serving.log_rotate_rows,
            log_rotate_seconds=serving.log_rotate_seconds,
            limits=Limits(
                max_instances=serving.max_instances,
                max_future_skew_s=serving.max_future_skew_s,
            ),
            retry_after_s=serving.retry_after_s,
            max_batch=serving.max_batch,
            max_batch_per_customer=serving.max_batch_per_customer,
            max_queued_transactions=serving.max_queued_transactions,
            max_queued_per_customer=serving.max_queued_per_customer,
            shed_retry_after_s=serving.shed_retry_after_s,
            history=HistoryLimits.from_settings(store),
            log_journal_dir=settings.inference_journal_dir,
            log_flush_s=serving.log_flush_s,
        )


@dataclasses.dataclass(frozen=True)
class ScoredRequest:
    request: ScoringRequest
    request_id: str
    results: list[ScoredTransaction]

    @property
    def degraded(self) -> bool:
        return any(r.degraded for r in self.results)


def _request_id(headers: dict[str, str] | None, given: str | None = None) -> str:
    if given:
        return given
    if headers:
        header = headers.get("x-request-id")
        if header and len(header) <= 256 and header.isprintable():
            return header
    return new_id("req")


class FraudModel(Model):
    """See the module docstring. Construct, :meth:`load`, then serve (``inference.app``)."""

    def __init__(
        self, options: ServingOptions, registry: Registry, loaded: LoadedModel | None = None
    ):
        super().__init__(options.model_name)
        self.options = options
        self.registry = registry
        self.ready = False
        self._loaded = loaded
        self.card: ModelCard | None = loaded.card if loaded else None
        self.scorer: Scorer | None = None
        self.batcher: MicroBatcher | None = None
        self.inference_log: InferenceLog | None = None
        self.client: redis.Redis | RedisCluster | None = None
        self.append_client: redis.Redis | RedisCluster | None = None
        self.appender: Appender | None = None
        self._m_shed: dict[str, Counter] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._stopped = False

    # ------------------------------------------------------------------------ lifecycle

    def load(self) -> bool:
        """Load and check the model (raises ``RegistryError``/``ModelIntegrityError``), connect
        the online store, and start waiting for it; returns readiness (False until Redis
        answers)."""
        if self.scorer is not None:
            return self.ready
        o = self.options
        loaded = self._loaded or self.registry.load_model(
            o.model_name, version=o.version, alias=None if o.version else CHAMPION
        )
        self._loaded = loaded
        self.card = card = loaded.card
        log.info("loaded %s (sha256 %s, threshold %.4g, feature service %s)",
                 card.label, card.sha256[:12], card.threshold, card.feature_service)
        self.client, histories = serving_histories(
            o.redis_url, o.redis_timeout_s, o.project, o.history
        )
        # Appends run off the response path: their own connection and a looser timeout.
        self.append_client, append_histories = serving_histories(
            o.redis_url, o.append_timeout_s, o.project, o.history,
            append_replicas=o.append_replicas,
        )
        self.appender = Appender(
            append_histories, model_name=card.name, retry_after_s=o.retry_after_s,
            history_bound=o.history.max_entries,
        )
        self.inference_log = InferenceLog(
            o.log_root,
            feature_names=card.feature_names,
            model_name=card.name,
            rotate_rows=o.log_rotate_rows,
            rotate_seconds=o.log_rotate_seconds,
            flush_s=o.log_flush_s,
            journal_dir=o.log_journal_dir,
        )
        self.scorer = Scorer(
            loaded,
            histories,
            appender=self.appender,
            retry_after_s=o.retry_after_s,
            sink=self.inference_log.append,
            history_bound=o.history.max_entries,
        )
        self.batcher = MicroBatcher(
            self.scorer,
            max_batch=o.max_batch,
            max_batch_per_customer=o.max_batch_per_customer,
            max_queued=o.max_queued_transactions,
            max_queued_per_customer=o.max_queued_per_customer,
            retry_after_s=o.shed_retry_after_s,
        )
        batcher = self.batcher
        m.QUEUED.labels(card.name).set_function(lambda: batcher.queued)
        self._m_shed = {r: m.SHED.labels(card.name, r) for r in m.SHED_REASONS}
        m.MODEL_INFO.labels(card.name, str(card.version), card.feature_service).set(1)
        m.MODEL_CREATED.labels(card.name, str(card.version)).set(card.created.timestamp())
        self._watcher = threading.Thread(target=self._wait_for_store, name="store-watch",
                                         daemon=True)
        self._watcher.start()
        return self.ready

    def start(self) -> None:
        """KServe calls this on registration; readiness comes from :meth:`load` only."""

    def _wait_for_store(self) -> None:
        """Ready once the online store answers a PING (checked every 0.5 s)."""
        assert self.client is not None
        attempts = 0
        while not self._stop.is_set():
            try:
                self.client.ping()
            except redis.RedisError as e:
                if attempts % 20 == 0:
                    log.warning("online store %s not reachable yet (%s): not ready",
                                self.options.redis_url, e)
                attempts += 1
                self._stop.wait(0.5)
                continue
            self.ready = True
            log.info("online store %s reachable: %s is ready", self.options.redis_url,
                     self.card.label if self.card else self.name)
            return

    def stop(self) -> None:
        """Graceful shutdown: finish the near-real-time appends, write the buffered inference
        log, close the store connections."""
        if self._stopped:
            return
        self._stopped = True
        self.ready = False
        self._stop.set()
        if self.appender is not None:
            self.appender.close()
        if self.inference_log is not None:
            rows = self.inference_log.close()
            log.info("inference log flushed (%d rows) to %s", rows, self.inference_log.root)
        for client in (self.client, self.append_client):
            if client is not None:
                client.close()

    # ------------------------------------------------------------------------ metadata

    @property
    def version_label(self) -> str:
        return str(self.card.version) if self.card else m.NO_VERSION

    def get_input_types(self) -> list[dict[str, Any]]:
        types = {c.TX_AMOUNT: "FP64"}
        return [
            {"name": f, "datatype": types.get(f, "BYTES"), "shape": [-1],
             "optional": f == c.TRANSACTION_ID}
            for f in ALL_FIELDS
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        types = {"score": "FP64", "degraded": "BOOL"}
        return [{"name": o, "datatype": types.get(o, "BYTES"), "shape": [-1]}
                for o in V2_OUTPUTS]

    def metadata(self) -> dict[str, Any]:
        """V2 model metadata, plus Vigil's parameters."""
        card = self.card
        return {
            "name": self.name,
            "versions": [self.version_label] if card else [],
            "platform": PLATFORM,
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            "parameters": {
                "feature_service": card.feature_service if card else None,
                "threshold": card.threshold if card else None,
                "sha256": card.sha256 if card else None,
                "features": list(card.feature_names) if card else [],
                "ready": self.ready,
            },
        }

    # ------------------------------------------------------------------------ inference

    async def preprocess(
        self, payload: Any, headers: dict[str, str] | None = None
    ) -> ScoringRequest:
        limits = self.options.limits
        if isinstance(payload, ScoringRequest):
            return payload
        if isinstance(payload, InferRequest):
            return decode_v2(orjson.dumps(_infer_request_document(payload)), None, limits)
        if isinstance(payload, bytes):
            raise RequestError("body must be JSON (Content-Type: application/json)", status=415)
        return parse_v1(payload, limits)

    async def predict(
        self,
        payload: ScoringRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> ScoredRequest:
        if self.batcher is None:
            raise RuntimeError("FraudModel.predict before load()")
        request_id = _request_id(headers, payload.request_id)
        try:
            results = await self.batcher.submit(payload.transactions, request_id)
        except Overloaded as e:
            self._m_shed[e.reason].inc()
            raise
        return ScoredRequest(payload, request_id, results)

    def shed_if_full(self) -> None:
        """:class:`Overloaded` when no request can be admitted now: checked before a body is
        parsed, so that shedding costs little."""
        if self.batcher is not None:
            try:
                self.batcher.shed_if_full()
            except Overloaded as e:
                self._m_shed[e.reason].inc()
                raise

    async def postprocess(
        self,
        result: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        assert isinstance(result, ScoredRequest) and self.card is not None
        if result.request.protocol == "v2":
            return self.v2_response(result)
        return self.v1_response(result)

    def v1_response(self, scored: ScoredRequest) -> dict[str, Any]:
        card = self.card
        assert card is not None
        return {
            "model_name": self.name,
            "model_version": str(card.version),
            "feature_service": card.feature_service,
            "threshold": card.threshold,
            "request_id": scored.request_id,
            "degraded": scored.degraded,
            "predictions": [
                {
                    "transaction_id": r.transaction.transaction_id,
                    "score": r.score,
                    "decision": r.decision,
                    "degraded": r.degraded,
                    "freshness": {
                        "customer": r.customer_freshness,
                        "terminal": r.terminal_freshness,
                    },
                }
                for r in scored.results
            ],
        }

    def v2_response(self, scored: ScoredRequest) -> InferResponse:
        card = self.card
        assert card is not None
        results = scored.results
        n = len(results)
        columns: dict[str, tuple[str, np.ndarray]] = {
            "transaction_id": (
                "BYTES",
                np.array([r.transaction.transaction_id for r in results], dtype=np.object_),
            ),
            "score": ("FP64", np.array([r.score for r in results], dtype=np.float64)),
            "decision": ("BYTES", np.array([r.decision for r in results], dtype=np.object_)),
            "degraded": ("BOOL", np.array([r.degraded for r in results], dtype=np.bool_)),
            "customer_freshness": (
                "BYTES", np.array([r.customer_freshness for r in results], dtype=np.object_)
            ),
            "terminal_freshness": (
                "BYTES", np.array([r.terminal_freshness for r in results], dtype=np.object_)
            ),
        }
        outputs = [
            InferOutput(name=name, shape=[n], datatype=datatype, data=data)
            for name, (datatype, data) in columns.items()
        ]
        request = scored.request
        requested = None
        if request.outputs is not None:
            requested = [
                RequestedOutput(
                    name,
                    {"binary_data": request.binary_per_output.get(name, request.binary_outputs)},
                )
                for name in request.outputs
            ]
        return InferResponse(
            response_id=scored.request_id,
            model_name=self.name,
            model_version=str(card.version),
            infer_outputs=outputs,
            parameters={
                "feature_service": card.feature_service,
                "threshold": card.threshold,
                "degraded": scored.degraded,
            },
            use_binary_outputs=request.binary_outputs,
            requested_outputs=requested,
        )


def _infer_request_document(request: InferRequest) -> dict[str, Any]:
    """A kserve ``InferRequest`` (gRPC or KServe's REST decoding) as a V2 JSON document."""
    inputs = []
    for tensor in request.inputs:
        data = tensor.data
        if data is None or not isinstance(data, list):
            try:
                array = tensor.as_numpy()
            except (ValueError, TypeError) as e:
                raise RequestError(f"cannot decode input {tensor.name!r}: {e}") from e
            data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                    for v in array.ravel().tolist()]
        inputs.append({"name": tensor.name, "datatype": tensor.datatype,
                       "shape": list(tensor.shape), "data": data})
    document: dict[str, Any] = {"inputs": inputs}
    if request.id:
        document["id"] = request.id
    return document
