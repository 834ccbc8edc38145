"""The server under abuse (issue 14), over real HTTP against real Redis: connections that
never finish their headers, load beyond the queue bound, a busy card, a killed process."""

from __future__ import annotations

import socket
import urllib.parse

import pytest

pytestmark = pytest.mark.integration


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
