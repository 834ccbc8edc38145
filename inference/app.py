"""The model server's ASGI app: Vigil's routes, KServe's protocol endpoints, one middleware.

:func:`create_app` builds a FastAPI app from KServe's public model API — the ``kserve.Model``
(:class:`inference.model.FraudModel`) in a ``ModelRepository`` behind a ``DataPlane`` — and
runs no KServe server class: :mod:`inference.server` serves the app with uvicorn, one process
per pod (scale-out is replicas). The app has:

* Vigil's routes, registered first so that they take precedence over KServe's for the same
  paths: ``POST /v1/models/{name}:predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer``
  that check the content type, parse the body themselves (:mod:`inference.schema`) and call
  the model through the ``DataPlane`` (plain Starlette routes: no per-request dependency
  injection); ``GET /v2/models/{name}[/versions/{v}]`` (metadata incl. feature service and
  threshold), ``GET /v2/models/{name}/versions/{v}/ready``, ``GET /v2/health/ready`` (ready
  only when every model is), ``GET /v2``, ``GET /`` and ``GET /metrics`` (Vigil's metrics);
  the model-repository extension (load/unload over HTTP) and ``:explain`` disabled;
* KServe's own V1 and V2 endpoints (``register_v1_endpoints``, ``register_v2_endpoints``) for
  the rest of the protocol: ``/v1/models``, ``/v1/models/{name}``, ``/v2/health/live``,
  ``/v2/models``, ``/v2/models/{name}/ready``;
* :class:`ServingMiddleware` (pure ASGI): the optional bearer token, the body limit (413), and
  a count of every scoring request by model, version, outcome and status code;
* exception handlers mapping typed errors to 4xx with ``{"error": "..."}``: invalid input 400
  (415 for the content type, 413 for size), unknown model or route 404, shed 429 with
  ``Retry-After`` (:class:`inference.batching.Overloaded`: checked before the body is parsed
  too), not ready 503. There is no catch-all handler: only bugs are 500;
* a lifespan whose shutdown stops every model (near-real-time appends finished, the inference
  log written) once uvicorn has let in-flight requests finish.
"""

from __future__ import annotations

import contextlib
import hmac
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from kserve import InferResponse, ModelRepository
from kserve.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
)
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
from kserve.protocol.rest.v2_endpoints import register_v2_endpoints
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.batching import Overloaded
from inference.model import FraudModel
from inference.schema import RequestError, decode_v2, load_json
from monitoring import metrics as m

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
#: The server's liveness and readiness probes stay open when a token is required; they name
#: no model. Everything that does (metadata, per-model readiness) needs the token.
_PROBES = re.compile(r"^/$|^/v2/health/(live|ready)$")
_BEARER: Final = b"bearer"
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
            429: "shed", 503: "not_ready"}.get(status, "invalid" if status < 500 else "error")


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
        self.token = token.encode() if token else None
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
        if self.token is not None and not _PROBES.match(path):
            given = next((v for k, v in headers if k == b"authorization"), b"")
            # "Bearer" in any letter case (HTTP auth schemes are case-insensitive), then one or
            # more spaces and the token, compared in constant time.
            scheme, _, credentials = given.partition(b" ")
            valid = hmac.compare_digest(credentials.lstrip(b" "), self.token)
            if not (valid and scheme.lower() == _BEARER):
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

    def served(self, name: str, version: str | None = None) -> FraudModel:
        """The model served as ``name`` (and ``version``, when given); 404 otherwise."""
        found = self.dataplane.model_registry.get_model(name)
        if not isinstance(found, FraudModel):
            raise ModelNotFound(name[:64])
        if version is not None and version != found.version_label:
            raise RequestError(
                f"model {name} version {version[:32]!r} is not served here "
                f"(serving version {found.version_label})",
                status=404,
            )
        return found

    def model(self, request: Request, name: str, version: str | None = None) -> FraudModel:
        """The model a scoring request asks for, ready to score."""
        found = self.served(name)
        request.scope.setdefault("vigil", {})["model_version"] = found.version_label
        self.served(name, version)
        if not found.ready:
            raise ModelNotReady(name, "the model or the online store is not reachable yet")
        return found

    # ------------------------------------------------------------------ scoring

    async def v1_predict(self, request: Request) -> Response:
        model_name: str = request.path_params["model_name"]
        self.model(request, model_name).shed_if_full()
        _check_encoding(request)
        if _media_type(request) != _JSON:
            raise RequestError("Content-Type must be application/json", status=415)
        payload = load_json(await request.body())
        headers = dict(request.headers.items())
        response, _ = await self.dataplane.infer(model_name, payload, headers)
        assert isinstance(response, dict)
        request.scope["vigil"]["outcome"] = "degraded" if response.get("degraded") else "ok"
        return json_response(response)

    async def v2_infer(self, request: Request) -> Response:
        model_name: str = request.path_params["model_name"]
        model_version: str | None = request.path_params.get("model_version")
        model = self.model(request, model_name, model_version)
        model.shed_if_full()
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
        self, model_name: str, model_version: str | None = None
    ) -> Response:
        return json_response(self.served(model_name, model_version).metadata())

    async def v2_model_version_ready(self, model_name: str, model_version: str) -> Response:
        if not self.served(model_name, model_version).ready:
            raise ModelNotReady(model_name)
        return json_response({"name": model_name, "ready": True})

    async def v2_ready(self) -> Response:
        models = self.dataplane.model_registry.get_models()
        waiting = sorted(name for name, model in models.items() if not model.ready)
        if not models or waiting:
            # Open without the token: says how many models wait, not which.
            what = f"{len(waiting)} of {len(models)} model(s) waiting" if models else "no model"
            return json_response({"ready": False, "error": f"not ready: {what}"},
                                 status_code=503)
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
                        self.v2_model_metadata, methods=["GET"], response_model=None)
        r.add_api_route("/v2/models/{model_name}/versions/{model_version}/ready",
                        self.v2_model_version_ready, methods=["GET"], response_model=None)
        r.add_api_route("/v2/health/ready", self.v2_ready, methods=["GET"], response_model=None)
        r.add_api_route("/v2", self.v2_server_metadata, methods=["GET"], response_model=None)
        r.add_api_route("/", self.dataplane.live, methods=["GET"], response_model=None)
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


async def _overloaded(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Overloaded)
    return Response(_error_body(str(exc)), status_code=429, media_type="application/json",
                    headers={"Retry-After": str(exc.retry_after_s)})


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
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(ModelNotReady, _not_ready)
    app.add_exception_handler(ServerNotReady, _not_ready)
    app.add_exception_handler(ServerNotLive, _not_ready)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


# ----------------------------------------------------------------------------- app


def stop_models(models: Sequence[FraudModel]) -> None:
    """Stop every model (idempotent): appends finished, inference log written."""
    for model in models:
        model.stop()


def create_app(
    models: Sequence[FraudModel], *, token: str | None, max_body_bytes: int
) -> FastAPI:
    """The server's app over loaded ``models`` (see the module docstring). ``token``: the
    bearer token every route but the health probes requires (None: none)."""
    repository = ModelRepository()
    for model in models:
        repository.update(model)
    dataplane = DataPlane(model_registry=repository)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn runs this after the in-flight requests finished (or the grace period ran out).
        stop_models(models)

    app = FastAPI(
        title="Vigil model server",
        version=dataplane.metadata()["version"],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    # Starlette matches routes in order: Vigil's first, then KServe's for the rest.
    app.include_router(VigilRoutes(dataplane).router())
    register_v1_endpoints(app, dataplane, None)  # None: no model-repository extension
    register_v2_endpoints(app, dataplane, None)
    add_exception_handlers(app)
    app.add_middleware(
        ServingMiddleware,
        served=lambda name: repository.get_model(name) is not None,
        token=token,
        max_body_bytes=max_body_bytes,
    )
    return app
