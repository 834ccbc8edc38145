"""The server under abuse (issue 14), over real HTTP against real Redis: connections that
never finish their headers, load beyond the queue bound, a busy card, a killed process."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.parse

import httpx
import orjson
import pytest

from inference.log import read_journal

pytestmark = pytest.mark.integration

V1 = "/v1/models/fraud:predict"


def _address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None
    return parsed.hostname, parsed.port


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout, raised,
    means it kept the connection open)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_half_sent_headers_and_silent_connections_are_closed(online_store, server_factory):
    """Issue 14: 300 connections that sent half a request header stayed open (20 s and more).
    Now a request's headers must be complete ``header_timeout_s`` after its first byte (408,
    then closed) and a connection that sends nothing is closed after ``idle_timeout_s``."""
    store = online_store(serving={"header_timeout_s": 1, "idle_timeout_s": 2})
    server = server_factory(config=store.config)
    address = _address(server.url)
    half = [socket.create_connection(address, timeout=30) for _ in range(20)]
    silent = [socket.create_connection(address, timeout=30) for _ in range(5)]
    try:
        for sock in half:
            sock.sendall(b"POST /v1/models/fraud:predict HTTP/1.1\r\nHost: x\r\nContent-Le")
        for sock in half:
            answer = _read_until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
            assert b"request headers not received in time" in answer
        for sock in silent:
            assert _read_until_closed(sock) == b""
    finally:
        for sock in half + silent:
            sock.close()
    # A client that keeps to the timeouts is served as before, on a connection used twice.
    with socket.create_connection(address, timeout=30) as sock:
        for _ in range(2):
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'{"live":true}')
    assert server.process.poll() is None


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response read from ``sock``: status, headers (lower-case names), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def test_requests_beyond_the_queue_bound_get_429_with_retry_after(
    serving_model, online_store, redis_process, server_factory, tx_instance
):
    """Issue 14: the request queue had no bound: under a flood every request waited, however
    long. Here the queue holds one transaction; Redis hangs (paused) so that the first batch
    blocks for the read budget (10 s: on a loaded machine the server needs seconds to read all
    64 requests, and once the budget is spent the batch is answered degraded and the queue
    frees) while the other requests arrive: they are answered 429 with Retry-After at once,
    counted, and the server goes on.

    How many of the 64 are shed depends on how many requests the server has read while the
    queue is full, which the scheduler decides (the Redis read blocks the event loop by
    design, see inference/online.py): 17 and 27 on loaded CI runs, 32 or more on quiet
    ones. Without the bound none is shed; with it, at least one is, with Retry-After, and
    the counters agree with the answers."""
    rp = redis_process()
    store = online_store(redis_url=rp.url, serving={"max_queued_transactions": 1,
                                                     "shed_retry_after_s": 2})
    server = server_factory(config=store.config, env={"VIGIL_REDIS__TIMEOUT_MS": "10000"})
    address = _address(server.url)
    rows = serving_model.live.iloc[:64]
    requests = []
    for _, row in rows.iterrows():
        body = orjson.dumps({"instances": [tx_instance(row)]})
        requests.append(
            f"POST {V1} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
    sockets = [socket.create_connection(address, timeout=60) for _ in requests]
    rp.pause()
    try:
        for sock, request in zip(sockets, requests, strict=True):
            sock.sendall(request)
        answers = [_response(sock) for sock in sockets]
    finally:
        rp.resume()
        for sock in sockets:
            sock.close()
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 429}, statuses
    shed = [(headers, body) for status, headers, body in answers if status == 429]
    assert shed, statuses
    for headers, body in shed:
        assert headers["retry-after"] == "2"
        assert "server busy" in orjson.loads(body)["error"]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post(V1, json={"instances": [tx_instance(rows.iloc[0])]}).status_code == 200
        metrics = http.get("/metrics").text
    count = float(len(shed))
    assert f'vigil_serving_shed_requests_total{{model_name="fraud",reason="queue"}} {count}' \
        in metrics
    assert (f'vigil_serving_requests_total{{model_name="fraud",model_version="1",'
            f'outcome="shed",status_code="429"}} {count}') in metrics


def test_a_killed_server_loses_no_journaled_transaction(
    serving_model, online_store, server_factory, tx_instance, read_log, tmp_path
):
    """Issue 14: SIGKILL after 6 s of load lost all 10,186 answered transactions (nothing was
    in a parquet file yet) and left an unreadable hidden .tmp parquet behind, forever. Now
    every row reaches the journal within ``log_flush_s``: after a SIGKILL, the next start
    publishes what the journal holds, and sets aside what it cannot recover."""
    store = online_store(serving={"log_flush_s": 0.2})
    log_root = tmp_path / "log"
    args = ["--log-root", str(log_root)]
    server = server_factory(config=store.config, extra_args=args)
    rows = serving_model.live.iloc[100:160]
    answered: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for start in range(0, len(rows), 6):
            chunk = rows.iloc[start : start + 6]
            body = {"instances": [tx_instance(r) for _, r in chunk.iterrows()]}
            response = http.post(V1, json=body)
            assert response.status_code == 200
            answered += [p["transaction_id"] for p in response.json()["predictions"]]

    def journaled() -> set[str]:
        ids: set[str] = set()
        for path in (log_root / "_journal").rglob("*.arrows"):
            for batch in read_journal(path)[1]:
                ids.update(batch.column("TRANSACTION_ID").to_pylist())
        return ids

    deadline = time.monotonic() + 60
    while journaled() != set(answered):
        assert time.monotonic() < deadline, "answered transactions never reached the journal"
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    assert read_log(log_root).empty  # nothing published before the kill
    # What the previous version left on SIGKILL: an unfinished hidden parquet file.
    (day,) = (log_root / "_journal").glob("date=*")
    owner = f"{socket.gethostname()}-{server.pid}"
    orphan = log_root / day.name / f".part-20180522T144000-{owner}-000007.0123abcd.tmp"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"PAR1 and nothing else")

    restarted = server_factory(config=store.config, extra_args=args)
    log = read_log(log_root)
    assert sorted(log["TRANSACTION_ID"]) == sorted(answered)
    assert not list((log_root / "_journal").rglob("*.arrows")) and not orphan.exists()
    assert len(list((log_root / "_aside").iterdir())) == 1
    text = restarted.log_path.read_text()
    assert f"recovered {len(answered)} inference log rows" in text
    assert "set aside an unfinished parquet file" in text
