"""Graceful shutdown of the one-process server: on SIGTERM it stops accepting connections,
answers the request in flight, writes the inference log and exits 0."""

from __future__ import annotations

import signal
import socket
import time
import urllib.parse
from pathlib import Path

import orjson
import pytest

from inference.client import health

pytestmark = pytest.mark.integration


def receive_queue(server_port: int, client_port: int) -> int | None:
    """Bytes the server has not read yet on the connection from ``client_port`` (Linux
    /proc/net/tcp), None when the connection is not listed."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (int(local.split(":")[1], 16) == server_port
                and int(remote.split(":")[1], 16) == client_port):
            return int(fields[4].split(":")[1], 16)
    return None


def until(predicate, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for: {what}"
        time.sleep(0.02)


def test_sigterm_answers_the_request_in_flight_then_flushes_and_exits_0(
    serving_model, main_store, server_factory, tx_instance, read_log, tmp_path
):
    log_root = tmp_path / "log"
    server = server_factory(config=main_store.config, extra_args=["--log-root", str(log_root)])
    port = urllib.parse.urlparse(server.url).port
    assert port is not None
    row = serving_model.live.iloc[90]
    body = orjson.dumps({"instances": [tx_instance(row)]})
    head = (f"POST /v1/models/fraud:predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body[:10])  # a request in flight: headers and part of the body
        client_port = sock.getsockname()[1]
        until(lambda: receive_queue(port, client_port) == 0, "the server reading the request")
        server.process.send_signal(signal.SIGTERM)
        until(lambda: health(server.url, "/v2/health/live", timeout_s=1) is None,
              "the server to stop accepting connections")
        assert server.process.poll() is None  # still answering the request in flight
        sock.sendall(body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", answer
    response = orjson.loads(rest.partition(b"\r\n\r\n")[2])
    assert response["predictions"][0]["transaction_id"] == str(row["TRANSACTION_ID"])
    assert server.process.wait(timeout=60) == 0, server.log_tail()
    log = read_log(log_root)
    assert log["TRANSACTION_ID"].tolist() == [str(row["TRANSACTION_ID"])]
    assert "inference log flushed (1 rows)" in server.log_path.read_text()
