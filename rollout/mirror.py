"""Shadow mode's mirror: forward to the primary, copy to the canary off the response path.

``python -m rollout.mirror --port P --primary URL --canary URL --model-name fraud`` (the local
target starts it; HAProxy sends it all traffic while shadow mode is on). Every request is
forwarded to the primary and the client gets the primary's answer, unchanged. A scoring
request (``POST /v1/models/<m>:predict`` or ``/v2/models/<m>/infer``) is then copied to the
canary in the background: the client never waits for it and never sees its answer. Copies in
flight are bounded (``--max-inflight``); beyond that they are dropped and counted.

For each copy the canary answered, the decisions of both answers are compared transaction by
transaction (``vigil_rollout_shadow_transactions_total{agreement="agree"|"disagree"}``); the
canary's own latency, errors and scores are in its server metrics like any other traffic.
``/mirror/health`` and ``/mirror/metrics`` are the mirror's own (everything else is
forwarded).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web

from monitoring import rollout as metrics

HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
})
SCORING_PATH: Final = re.compile(r"^/(v1/models/[^/]+:predict|v2/models/[^/]+/infer)$")
DEFAULT_MAX_INFLIGHT: Final = 256


def decisions_of(body: bytes) -> list[str] | None:
    """The per-transaction decisions of a V1 (``predictions[].decision``) or V2
    (output ``decision``) answer; None when the answer has none."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    predictions = answer.get("predictions")
    if isinstance(predictions, list):
        out = [p.get("decision") for p in predictions if isinstance(p, dict)]
        return [str(d) for d in out] if len(out) == len(predictions) else None
    outputs = answer.get("outputs")
    if isinstance(outputs, list):
        for output in outputs:
            if isinstance(output, dict) and output.get("name") == "decision":
                data = output.get("data")
                return [str(d) for d in data] if isinstance(data, list) else None
    return None


def agreement(primary: Sequence[str], canary: Sequence[str]) -> tuple[int, int] | None:
    """(agreeing, disagreeing) decisions of two answers to the same request; None when they
    do not line up."""
    if len(primary) != len(canary):
        return None
    agree = sum(1 for p, c in zip(primary, canary, strict=True) if p == c)
    return agree, len(primary) - agree


class Mirror:
    """The aiohttp application (see the module docstring)."""

    def __init__(self, primary: str, canary: str, model_name: str,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, timeout_s: float = 30.0) -> None:
        self.primary = primary.rstrip("/")
        self.canary = canary.rstrip("/")
        self.model_name = model_name
        self.max_inflight = max_inflight
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.inflight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None
        m = metrics
        self._answered = m.SHADOW_REQUESTS.labels(model_name, "answered")
        self._failed = m.SHADOW_REQUESTS.labels(model_name, "failed")
        self._dropped = m.SHADOW_REQUESTS.labels(model_name, "dropped")
        self._agree = m.SHADOW_TRANSACTIONS.labels(model_name, "agree")
        self._disagree = m.SHADOW_TRANSACTIONS.labels(model_name, "disagree")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/mirror/health", self.health)
        app.router.add_get("/mirror/metrics", self.metrics)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _: web.Application) -> None:
        self.session = aiohttp.ClientSession(
            timeout=self.timeout, connector=aiohttp.TCPConnector(limit=0))

    async def _close(self, _: web.Application) -> None:
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=10)
        if self.session is not None:
            await self.session.close()

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=metrics.mirror_exposition(),
                            headers={"Content-Type": "text/plain; version=0.0.4"})

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            async with self.session.request(request.method, self.primary + request.path_qs,
                                            data=body, headers=headers) as answer:
                payload = await answer.read()
                status = answer.status
                answer_headers = {k: v for k, v in answer.headers.items()
                                  if k.lower() not in HOP_BY_HOP}
        except (aiohttp.ClientError, TimeoutError) as e:
            return web.json_response({"error": f"primary unreachable: {e}"}, status=502)
        if request.method == "POST" and SCORING_PATH.match(request.path) and status == 200:
            self._copy(request.path_qs, body, headers, payload)
        return web.Response(body=payload, status=status, headers=answer_headers)

    def _copy(self, path: str, body: bytes, headers: dict[str, str], primary: bytes) -> None:
        if self.inflight >= self.max_inflight:
            self._dropped.inc()
            return
        self.inflight += 1
        task = asyncio.create_task(self._shadow(path, body, headers, primary))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _shadow(self, path: str, body: bytes, headers: dict[str, str],
                      primary: bytes) -> None:
        assert self.session is not None
        try:
            async with self.session.post(self.canary + path, data=body,
                                         headers=headers) as answer:
                payload = await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError):
            self._failed.inc()
            return
        finally:
            self.inflight -= 1
        if status >= 500:
            self._failed.inc()
            return
        self._answered.inc()
        ours, theirs = decisions_of(primary), decisions_of(payload)
        counted = agreement(ours, theirs) if ours is not None and theirs is not None else None
        if counted is not None:
            self._agree.inc(counted[0])
            self._disagree.inc(counted[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rollout.mirror",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--primary", required=True, help="URL of the primary server")
    parser.add_argument("--canary", required=True, help="URL of the canary server")
    parser.add_argument("--model-name", default="fraud")
    parser.add_argument("--max-inflight", type=int, default=DEFAULT_MAX_INFLIGHT)
    args = parser.parse_args(argv)
    mirror = Mirror(args.primary, args.canary, args.model_name, args.max_inflight)
    options: dict[str, Any] = {"host": args.host, "port": args.port, "print": None,
                               "access_log": None, "shutdown_timeout": 10}
    web.run_app(mirror.app(), **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
