"""Keep-alive HTTP/1.1 connections to a JSON-RPC upstream, lean enough for the relay's hot path.

A JSON-RPC call is one small POST answered by one small body: no redirects, cookies, proxies or content coding to
negotiate. aiohttp's client does all of that on every request, which cost the relay more CPU per call than serving
the client did. Here a request is one `transport.write` of prepared bytes on a pooled connection and the answer is
parsed by httptools (the parser uvicorn uses: Content-Length or chunked bodies). Pools open connections on demand
up to a limit, reuse them while the upstream keeps them alive, and drop one at its first sign of trouble.

A POST is never retried: a JSON-RPC call may have effects (eth_sendRawTransaction), and a connection that broke
after the bytes left cannot tell whether the node acted.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools

MAX_ANSWER_BYTES = 64 * 1024 * 1024  # a larger answer (an enormous eth_getLogs) is refused rather than held


class UpstreamConnectionError(Exception):
    """The upstream could not be reached or broke off; `timeout` when it took too long."""

    def __init__(self, message: str, *, timeout: bool = False):
        super().__init__(message)
        self.timeout = timeout


class _Connection(asyncio.Protocol):
    """One connection, one request at a time; httptools calls the on_* methods as the answer arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(UpstreamConnectionError(f"The upstream's answer is not HTTP: {error}."))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamConnectionError("The upstream closed the connection before answering."))

    # httptools
    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_ANSWER_BYTES:
            self._fail(UpstreamConnectionError(f"The upstream's answer is over {MAX_ANSWER_BYTES:,} bytes."))
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.chunks)))
        if not self.parser.should_keep_alive():
            self.close()

    # the pool's side
    async def exchange(self, request: bytes, timeout: float) -> tuple[int, bytes]:
        if self.closed or self.transport is None:  # a new connection the upstream closed before it was used
            raise UpstreamConnectionError("The upstream closed the connection before answering.")
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.chunks, self.size = [], 0
        self.parser = httptools.HttpResponseParser(self)
        self.transport.write(request)
        timer = loop.call_later(timeout, self._expire)
        try:
            return await self.waiter
        finally:
            timer.cancel()
            self.waiter = None

    def _expire(self) -> None:
        self._fail(UpstreamConnectionError("The upstream took too long.", timeout=True))

    def _fail(self, error: UpstreamConnectionError) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


@dataclass
class UpstreamPool:
    """POSTs to one URL over at most `limit` keep-alive connections."""

    url: str
    limit: int = 256
    connect_timeout: float = 10.0
    idle: deque[_Connection] = field(default_factory=deque)
    _slots: asyncio.Semaphore | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"An upstream URL must be http(s)://host[:port][/path], not {self.url!r}.")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rpartition("@")[2]
        # Credentials in the URL (https://user:password@node.example/) are sent as HTTP Basic, as curl does.
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}" if parts.username else None
        authorization = (
            f"Authorization: Basic {base64.b64encode(credentials.encode()).decode()}\r\n" if credentials else ""
        )
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n{authorization}Content-Type: application/json\r\n"
            "Accept: application/json\r\nUser-Agent: gatehouse-relay\r\nContent-Length: "
        ).encode("latin-1")

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        """The upstream's HTTP status and body; UpstreamConnectionError when it could not be had."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        async with self._slots:
            connection = await self._connection(timeout)
            status, answer = await connection.exchange(self.head + b"%d\r\n\r\n" % len(body) + body, timeout)
            if not connection.closed:
                self.idle.append(connection)
            return status, answer

    async def _connection(self, timeout: float) -> _Connection:
        while self.idle:
            connection = self.idle.pop()  # the most recently used: the least likely to have been timed out
            if not connection.closed:
                return connection
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(min(timeout, self.connect_timeout)):
                _transport, connection = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
                )
        except TimeoutError:
            raise UpstreamConnectionError("Connecting to the upstream took too long.", timeout=True) from None
        except OSError as error:
            raise UpstreamConnectionError(f"The upstream is unreachable: {error.strerror or error}.") from None
        return connection

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()
