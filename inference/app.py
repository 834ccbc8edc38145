"""Server assembly: KServe's ``ModelServer`` and FastAPI app, hardened for Vigil.

:class:`LocalModelServer` is ``kserve.ModelServer`` with what local runs need: it binds the
given host (127.0.0.1 by default; KServe's REST server hard-codes 0.0.0.0), runs no gRPC server,
serves on uvloop, registers models that are not ready yet (readiness follows the model), keeps
full garbage collections off the tail latency (:func:`tune_garbage_collector`), and stops every
model after the server stopped (appends and the inference log are flushed on SIGTERM/SIGINT).

:class:`VigilRESTServer` is KServe's ``RESTServer`` with, in front of KServe's own routes:

* ``POST /v1/models/{name}:predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer`` that
  check the content type, parse the body themselves (:mod:`inference.schema`) and call the
  model through KServe's ``DataPlane`` (plain Starlette routes: no per-request dependency
  injection);
* ``GET /v2/models/{name}[/versions/{v}]`` (metadata incl. feature service and threshold),
  ``GET /v2/health/ready`` (ready only when every model is), ``GET /v2`` and ``GET /metrics``
  (Vigil's metrics, all workers);
* the model-repository extension (load/unload over HTTP) and ``:explain`` disabled.

:class:`ServingMiddleware` (pure ASGI) enforces the optional bearer token, the body limit (413),
and counts every scoring request by model, version, outcome and status code. Exception handlers
map typed errors to 4xx with ``{"error": "..."}``: invalid input 400 (415 for the content type,
413 for size), unknown model or route 404, not ready 503. Only bugs are 500.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import orjson
import uvloop
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from kserve import InferResponse, ModelServer
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model import BaseKServeModel
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.model import FraudModel
from inference.schema import RequestError, decode_v2
from monitoring import metrics as m
from vigil.process import tune_garbage_collector

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_ENV: Final = "VIGIL_SERVING_TOKEN"
BINARY_HEADER: Final = "inference-header-content-length"
_SCORING = re.compile(
    r"^/v1/models/(?P<v1>[^/]+):predict$|^/v2/models/(?P<v2>[^/]+)(?:/versions/[^/]+)?/infer$"
)
#: Liveness and readiness probes stay open when a token is required.
_PROBES = re.compile(
    r"^/$|^/v2/health/(live|ready)$|^/v2/models/[^/]+(/versions/[^/]+)?/ready$|^/v1/models/[^/:]+$"
)
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_JSON: Final = "application/json"
_OCTET: Final = "application/octet-stream"


class BodyTooLarge(RequestError):
    def __init__(self, limit: int):
        super().__init__(f"request body is larger than {limit:,} bytes", status=413)


def _error_body(message: str, field: str | None = None) -> bytes:
    body: dict[str, str] = {"error": message}
    if field:
        body["field"] = field
    return orjson.dumps(body)


async def _reply(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = _error_body(message)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=_JSON)


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    return {401: "unauthorized", 403: "unauthorized", 404: "not_found", 413: "too_large",
            503: "not_ready"}.get(status, "invalid" if status < 500 else "error")


class ServingMiddleware:
    """Bearer token, body limit and per-request metrics of the scoring endpoints."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        served: Callable[[str], bool],
        token: str | None,
        max_body_bytes: int,
    ):
        self.app = app
        self.served = served
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        match = _SCORING.match(path)
        info: dict[str, str] = {"model_version": m.NO_VERSION}
        scope["vigil"] = info
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            rejection = self._reject(scope, path)
            if rejection is not None:
                code, text, extra = rejection
                await _reply(send_status, code, text, extra)
                return
            await self.app(scope, self._limited(receive), send_status)
        finally:
            if match:
                name = match.group("v1") or match.group("v2")
                model_name = name if self.served(name) else m.UNKNOWN_MODEL
                outcome = info.get("outcome") if status < 400 else None
                m.REQUESTS.labels(model_name, info["model_version"],
                                  outcome or _outcome(status), str(status)).inc()
                m.REQUEST_SECONDS.labels(model_name, "v1" if match.group("v1") else "v2").observe(
                    time.perf_counter() - start
                )

    def _reject(self, scope: Scope, path: str) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if self.expected is not None and not _PROBES.match(path):
            given = next((v for k, v in headers if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                return 401, "missing or invalid bearer token", [(b"www-authenticate", b"Bearer")]
        if scope["method"] in _BODY_METHODS:
            length = next((v for k, v in headers if k == b"content-length"), None)
            if length is not None:
                if not length.isdigit():
                    return 400, "Content-Length must be a non-negative integer", []
                if int(length) > self.max_body:
                    return 413, f"request body is larger than {self.max_body:,} bytes", []
        return None

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that stops a chunked body at the limit."""
        seen = 0
        limit = self.max_body

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return limited


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _check_encoding(request: Request) -> None:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RequestError(f"Content-Encoding {encoding!r} is not supported", status=415)


class VigilRoutes:
    """The routes Vigil puts in front of KServe's (see the module docstring)."""

    def __init__(self, dataplane: DataPlane):
        self.dataplane = dataplane

    def model(self, request: Request, name: str, version: str | None = None) -> FraudModel:
        found = self.dataplane.model_registry.get_model(name)
        if not isinstance(found, FraudModel):
            raise ModelNotFound(name[:64])
        request.scope.setdefault("vigil", {})["model_version"] = found.version_label
        if version is not None and version != found.version_label:
            raise RequestError(
                f"model {name} version {version[:32]!r} is not served here "
                f"(serving version {found.version_label})",
                status=404,
            )
        if not found.ready:
            raise ModelNotReady(name, "the model or the online store is not reachable yet")
        return found

    # ------------------------------------------------------------------ scoring

    async def v1_predict(self, request: Request) -> Response:
        model_name: str = request.path_params["model_name"]
        self.model(request, model_name)
        _check_encoding(request)
        if _media_type(request) != _JSON:
            raise RequestError("Content-Type must be application/json", status=415)
        body = await request.body()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise RequestError(f"body is not valid JSON: {e}") from e
        headers = dict(request.headers.items())
        response, _ = await self.dataplane.infer(model_name, payload, headers)
        assert isinstance(response, dict)
        request.scope["vigil"]["outcome"] = "degraded" if response.get("degraded") else "ok"
        return json_response(response)

    async def v2_infer(self, request: Request) -> Response:
        model_name: str = request.path_params["model_name"]
        model_version: str | None = request.path_params.get("model_version")
        model = self.model(request, model_name, model_version)
        _check_encoding(request)
        raw_length = request.headers.get(BINARY_HEADER)
        media = _media_type(request)
        if raw_length is None and media != _JSON:
            raise RequestError("Content-Type must be application/json", status=415)
        if raw_length is not None and media not in (_JSON, _OCTET):
            raise RequestError(
                "Content-Type must be application/octet-stream or application/json "
                "with Inference-Header-Content-Length",
                status=415,
            )
        json_length = None
        if raw_length is not None:
            if not raw_length.strip().isdigit():
                raise RequestError("Inference-Header-Content-Length must be an integer")
            json_length = int(raw_length)
        body = await request.body()
        parsed = decode_v2(body, json_length, model.options.limits)
        headers = dict(request.headers.items())
        response, _ = await self.dataplane.infer(model_name, parsed, headers)
        assert isinstance(response, InferResponse)
        degraded = (response.parameters or {}).get("degraded")
        request.scope["vigil"]["outcome"] = "degraded" if degraded else "ok"
        content, header_length = response.to_rest()
        if header_length is not None:
            assert isinstance(content, bytes)
            return Response(
                content=content,
                media_type=_OCTET,
                headers={"Inference-Header-Content-Length": str(header_length)},
            )
        return json_response(content)

    # ------------------------------------------------------------------ metadata, health

    async def v2_model_metadata(
        self, model_name: str, request: Request, model_version: str | None = None
    ) -> Response:
        found = self.dataplane.model_registry.get_model(model_name)
        if not isinstance(found, FraudModel):
            raise ModelNotFound(model_name[:64])
        if model_version is not None and model_version != found.version_label:
            raise RequestError(f"model {model_name} version {model_version[:32]!r} is not "
                               f"served here (serving version {found.version_label})", status=404)
        return json_response(found.metadata())

    async def v2_model_metadata_version(
        self, model_name: str, model_version: str, request: Request
    ) -> Response:
        return await self.v2_model_metadata(model_name, request, model_version)

    async def v2_ready(self) -> Response:
        models = self.dataplane.model_registry.get_models()
        waiting = sorted(name for name, model in models.items() if not model.ready)
        if not models or waiting:
            return json_response(
                {"ready": False, "error": f"not ready: {', '.join(waiting) or 'no model'}"},
                status_code=503,
            )
        return json_response({"ready": True})

    async def v2_server_metadata(self) -> Response:
        return json_response(
            {"name": "vigil", "version": self.dataplane.metadata()["version"], "extensions": []}
        )

    async def metrics(self, request: Request) -> Response:
        content, media_type = m.exposition()
        return Response(content=content, media_type=media_type)

    async def disabled(self, model_name: str) -> Response:
        return json_response(
            {"error": "the model repository extension is disabled on this server"},
            status_code=403,
        )

    async def no_explainer(self, model_name: str) -> Response:
        return json_response({"error": f"model {model_name[:64]!r} has no explainer"},
                              status_code=404)

    def router(self) -> APIRouter:
        r = APIRouter()
        # The scoring routes are plain Starlette routes: no dependency injection per request.
        r.add_route("/v1/models/{model_name}:predict", self.v1_predict, methods=["POST"])
        r.add_route("/v2/models/{model_name}/infer", self.v2_infer, methods=["POST"])
        r.add_route("/v2/models/{model_name}/versions/{model_version}/infer", self.v2_infer,
                    methods=["POST"])
        r.add_api_route("/v1/models/{model_name}:explain", self.no_explainer, methods=["POST"],
                        response_model=None)
        r.add_api_route("/v2/models/{model_name}", self.v2_model_metadata, methods=["GET"],
                        response_model=None)
        r.add_api_route("/v2/models/{model_name}/versions/{model_version}",
                        self.v2_model_metadata_version, methods=["GET"], response_model=None)
        r.add_api_route("/v2/health/ready", self.v2_ready, methods=["GET"], response_model=None)
        r.add_api_route("/v2", self.v2_server_metadata, methods=["GET"], response_model=None)
        r.add_api_route("/metrics", self.metrics, methods=["GET"], response_model=None)
        r.add_api_route("/v2/repository/models/{model_name}/load", self.disabled,
                        methods=["POST"], response_model=None)
        r.add_api_route("/v2/repository/models/{model_name}/unload", self.disabled,
                        methods=["POST"], response_model=None)
        return r


# ----------------------------------------------------------------------------- errors


async def _request_error(_: Request, exc: Exception) -> Response:
    if isinstance(exc, RequestError):
        return Response(_error_body(str(exc), exc.field), status_code=exc.status,
                        media_type="application/json")
    return Response(_error_body(str(exc)), status_code=400, media_type="application/json")


async def _not_found(_: Request, exc: Exception) -> Response:
    return Response(_error_body(str(exc)), status_code=404, media_type="application/json")


async def _not_ready(_: Request, exc: Exception) -> Response:
    return Response(_error_body(str(exc)), status_code=503, media_type="application/json")


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return Response(_error_body(str(exc.detail)), status_code=exc.status_code,
                    media_type="application/json", headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()
    )
    return Response(_error_body(problems[:1000] or "invalid request"), status_code=400,
                    media_type="application/json")


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(InvalidInput, _request_error)
    app.add_exception_handler(ModelNotFound, _not_found)
    app.add_exception_handler(ModelNotReady, _not_ready)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


# ----------------------------------------------------------------------------- servers


class LocalRESTServer(RESTServer):
    """KServe's REST server on a chosen host (KServe binds 0.0.0.0)."""

    def __init__(self, *args: Any, host: str = "127.0.0.1", access_log: bool = False,
                 sockets: list[socket.socket] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.config.host = host
        self.access_log = access_log
        self.sockets = sockets

    async def start(self) -> None:
        """KServe's ``start``, serving on pre-bound sockets when given (forked workers)."""
        if not self.access_log:
            # uvicorn logs a line per request when its access logger has handlers.
            access = logging.getLogger("uvicorn.access")
            access.handlers.clear()
            access.propagate = False
        self.create_application()
        await self._server.serve(sockets=self.sockets)


class VigilRESTServer(LocalRESTServer):
    def __init__(self, *args: Any, token: str | None = None, max_body_bytes: int = 1 << 20,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.token = token
        self.max_body_bytes = max_body_bytes

    def _add_middlewares(self, app: FastAPI) -> None:
        # KServe's TimingMiddleware logs a line per request; Vigil's metrics replace it.
        registry = self.dataplane.model_registry
        app.add_middleware(
            ServingMiddleware,
            served=lambda name: registry.get_model(name) is not None,
            token=self.token,
            max_body_bytes=self.max_body_bytes,
        )

    def _register_endpoints(self, app: FastAPI) -> None:
        app.include_router(VigilRoutes(self.dataplane).router())
        super()._register_endpoints(app)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        add_exception_handlers(app)


RestServerFactory = Callable[[DataPlane, ModelRepositoryExtension], RESTServer]

#: Young collections every 5,000 net allocations (700 by default) and a full one every
#: 50 x 100 of those (~12,000 requests at this service's allocation rate).
class LocalModelServer(ModelServer):
    """``kserve.ModelServer`` for one host, without gRPC, on uvloop (see module docstring)."""

    def __init__(self, *, http_port: int, rest_server: RestServerFactory, grace_period: int = 30,
                 latency_logging: bool = False):
        """``latency_logging``: KServe's log line per request (Vigil's metrics replace it)."""
        super().__init__(
            http_port=http_port,
            workers=1,
            enable_grpc=False,
            enable_docs_url=False,
            enable_latency_logging=latency_logging,
            grace_period=grace_period,
        )
        self._make_rest_server = rest_server

    def start(self, models: list[BaseKServeModel]) -> None:
        for model in models:
            self.register_model(model)
            model.enable_latency_logging = self.enable_latency_logging
        rest = self._make_rest_server(self.dataplane, self.model_repository_extension)
        self._rest_server = rest

        def shut_down(signum: int, frame: object) -> None:
            # uvicorn handles SIGINT/SIGTERM while serving and re-raises them afterwards; this
            # handler covers signals before serving starts and keeps the re-raised one from
            # killing the process before the models are stopped (inference log flushed).
            rest._server.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, shut_down)
        self.servers.append(rest.start())
        tune_garbage_collector()
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._serve())
        finally:
            for model in models:
                model.stop()


def vigil_rest_server(
    *, port: int, host: str, token: str | None, max_body_bytes: int, grace_period: int = 30,
    access_log: bool = False, sockets: list[socket.socket] | None = None,
) -> RestServerFactory:
    def make(dataplane: DataPlane, extension: ModelRepositoryExtension) -> RESTServer:
        return VigilRESTServer(
            "kserve.model_server:app", dataplane, extension, port,
            grace_period=grace_period, host=host, access_log=access_log, token=token,
            max_body_bytes=max_body_bytes, sockets=sockets,
        )

    return make
