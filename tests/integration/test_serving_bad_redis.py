"""The predictor's Redis settings as the chart can get them wrong: the real ``vigil serve``
process pointed at a closed port, or at a password-protected Redis with the empty password an
empty Secret value gives (the chart builds ``redis://:$(REDIS_PASSWORD)@host:6379/0``), or
with an empty URL (an empty ``url`` key of ``redis.external.existingSecret``).

A Redis that does not answer, or refuses the password, keeps the server up and unready (503 on
``/v2/health/ready``, 200 on ``/v2/health/live``): Kubernetes keeps the pod out of the Service
without restarting it, and it becomes ready by itself once Redis answers. An empty URL is a
configuration error: the server exits naming the setting."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from inference.client import ServerProcess, free_port, health

pytestmark = pytest.mark.integration


def until(predicate: Callable[[], bool], what: str, timeout_s: float = 180.0) -> None:
    """Poll ``predicate`` (a functional wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for: {what}"
        time.sleep(0.1)


def assert_up_and_unready(server: ServerProcess) -> None:
    until(lambda: "not reachable yet" in server.log_path.read_text()
          or server.process.poll() is not None, "the server waiting for Redis")
    assert server.process.poll() is None, server.log_tail()
    until(lambda: health(server.url, "/v2/health/live") == 200, "liveness", 60)
    # Still unready and alive after several more readiness periods of waiting.
    for _ in range(3):
        assert health(server.url, "/v2/health/ready") == 503
        time.sleep(1)
    assert server.process.poll() is None, server.log_tail()


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[int]:
    """A private redis-server on 127.0.0.1 requiring the password ``s3cret``."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "s3cret"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis(port=port, password="s3cret", socket_timeout=0.5)
    try:
        until(lambda: _pings(client) or process.poll() is not None, "redis-server", 10)
        assert process.poll() is None, "redis-server exited"
        yield port
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_a_closed_redis_port_leaves_the_server_up_and_unready(
    serving_model, online_store, server_factory
):
    closed = free_port()  # nothing listens there
    store = online_store(redis_url=f"redis://127.0.0.1:{closed}/0", materialized=False)
    server = server_factory(config=store.config, wait=False)
    assert_up_and_unready(server)
    assert "Connection refused" in server.log_path.read_text() or \
        "Error 111" in server.log_path.read_text(), server.log_tail()


def test_an_empty_secret_password_leaves_the_server_up_and_unready(
    serving_model, online_store, server_factory, password_redis
):
    url = f"redis://127.0.0.1:{password_redis}/0"
    store = online_store(redis_url=url, materialized=False)
    # What the chart's $(REDIS_PASSWORD) expansion gives when the Secret's value is empty.
    server = server_factory(config=store.config, wait=False, env={
        "VIGIL_REDIS__URL": f"redis://:@127.0.0.1:{password_redis}/0"})
    assert_up_and_unready(server)
    assert "Authentication required" in server.log_path.read_text(), server.log_tail()


def test_an_empty_redis_url_is_a_clear_error(serving_model, online_store, server_factory):
    store = online_store(materialized=False)
    server = server_factory(config=store.config, wait=False, env={"VIGIL_REDIS__URL": ""})
    until(lambda: server.process.poll() is not None, "the server to refuse an empty URL", 120)
    assert server.process.returncode != 0
    log = server.log_path.read_text()
    assert "VIGIL_REDIS__URL: redis.url" in log and "Traceback" not in log, server.log_tail()
