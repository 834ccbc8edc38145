"""HTTP/1.1 connections that cannot be held open for free: uvicorn's httptools protocol with a
header timeout and an idle timeout from the first byte.

uvicorn arms its keep-alive timer only after a response, and cancels it when any byte arrives,
so a client that connects and sends nothing, or sends half a request header and stops, holds a
connection (and its memory) for as long as it likes. :func:`guarded_protocol` closes:

* a connection that sends nothing for ``serving.idle_timeout_s`` (before its first request as
  after any other: the same keep-alive timeout);
* a request whose headers are not complete ``serving.header_timeout_s`` after its first byte,
  answered ``408 Request Timeout`` first.

The request body is the application's to read; its size is bounded by ``serving.max_body_bytes``.
"""

from __future__ import annotations

import asyncio
from typing import Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_LATE_BODY: Final = b'{"error": "request headers not received in time"}'
_TIMED_OUT: Final = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_LATE_BODY)).encode() + b"\r\n\r\n" + _LATE_BODY
)


def guarded_protocol(header_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the timeouts of the module docstring (the idle one is
    uvicorn's ``timeout_keep_alive``)."""

    class GuardedProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # Idle until the first byte: uvicorn arms this timer only after a response.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.write(_TIMED_OUT)
                self.transport.close()

    return GuardedProtocol
