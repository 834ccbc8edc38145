"""Keep-alive clients that replay scoring requests and note which model version answered.

Real clients keep their connections open, so that is how a split is measured: each client
thread holds one HTTP/1.1 connection and sends requests one after the other (closed loop,
optionally paced), recording for every answer its time, status and ``model_version``. A failed
connection is a client-visible error (status 0) and the client reconnects. Used by the rollout
benchmark and tests, and to put traffic on the local stack by hand::

    with Traffic(stack.url, request_bodies(transactions), clients=4) as traffic:
        ...
    answers = traffic.answers()
"""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import random
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson
import pandas as pd

from inference.client import instances_from_frame

DEFAULT_PATH: Final = "/v1/models/fraud:predict"


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    #: ``time.time()`` when the answer (or the failure) arrived.
    at: float
    #: HTTP status; 0 when the connection failed.
    status: int
    #: ``model_version`` of a 200 answer.
    version: int | None
    seconds: float


def request_bodies(transactions: pd.DataFrame, per_request: int = 1) -> list[bytes]:
    """V1 request bodies of ``per_request`` transactions each, in the frame's order."""
    instances = instances_from_frame(transactions)
    return [orjson.dumps({"instances": instances[i:i + per_request]})
            for i in range(0, len(instances), per_request)]


def versions(answers: Iterable[Answer]) -> Counter[int | None]:
    """Answers by model version (None: not a 200)."""
    return Counter(a.version if a.status == 200 else None for a in answers)


class Traffic:
    """``clients`` keep-alive connections sending ``bodies`` in random order (each client its
    own seeded order: no periodic pattern a round-robin splitter could lock onto) until
    stopped or until ``total`` requests were sent."""

    def __init__(self, url: str, bodies: Sequence[bytes], *, clients: int = 4,
                 path: str = DEFAULT_PATH, pause_s: float = 0.0, timeout_s: float = 60.0,
                 total: int | None = None) -> None:
        if not bodies:
            raise ValueError("no request bodies to send")
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = path
        self.bodies = list(bodies)
        self.clients = clients
        self.pause_s = pause_s
        self.timeout_s = timeout_s
        self.total = total
        self._counter = itertools.count()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> Traffic:
        self._threads = [threading.Thread(target=self._client, args=(i,), name=f"traffic-{i}",
                                          daemon=True)
                         for i in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        self.join()
        return self.answers()

    def join(self, timeout_s: float | None = None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def answers(self, since: float | None = None) -> list[Answer]:
        with self._lock:
            out = list(self._answers)
        return out if since is None else [a for a in out if a.at >= since]

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        connection: http.client.HTTPConnection | None = None
        headers = {"Content-Type": "application/json"}
        while not self._stop.is_set():
            n = next(self._counter)
            if self.total is not None and n >= self.total:
                break
            body = self.bodies[rng.randrange(len(self.bodies))]
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout_s)
            t0 = time.perf_counter()
            try:
                connection.request("POST", self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = None
                self._add(Answer(time.time(), 0, None, time.perf_counter() - t0))
                continue
            self._add(Answer(time.time(), status, _version(payload) if status == 200 else None,
                             time.perf_counter() - t0))
            if response.will_close:
                connection.close()
                connection = None
            if self.pause_s:
                self._stop.wait(self.pause_s)
        if connection is not None:
            connection.close()

    def _add(self, answer: Answer) -> None:
        with self._lock:
            self._answers.append(answer)


def _version(payload: bytes) -> int | None:
    try:
        answer: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    version = answer.get("model_version") if isinstance(answer, dict) else None
    try:
        return int(version) if version is not None else None
    except (TypeError, ValueError):
        return None
