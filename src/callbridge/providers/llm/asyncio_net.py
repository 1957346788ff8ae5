"""httpcore's network layer on asyncio's own transports, for the LLM clients' pool.

httpcore reads a streamed reply one network read at a time (a token, for a model that
streams token by token), and its default backend goes through anyio: a cancel scope for
every read's timeout, an anyio stream, and on every request a readability probe of each
idle connection that builds anyio's attribute table and polls the socket. That was a
quarter of the LLM client's CPU (``bench/vendors.py llm --profile``). ``AsyncioBackend``
implements the same small interface (httpcore's documented ``AsyncNetworkBackend``) on an
``asyncio.Protocol``: data is appended as it arrives, a read that finds data returns it
without waiting, the reads' timeout is one timer a connection (moved, when it fires, to
the waiting read's deadline), and "is it readable" is a look at the buffer. TLS is
``loop.start_tls`` with httpx2's own SSL context (ALPN included, so HTTP/2 is negotiated
as before); uvloop implements all of it.

httpx2's transport takes no network backend, so ``http_transport`` builds one and gives
it a pool made with ours before any connection exists (a test checks the requests really
go through it, so a renamed attribute fails loudly). That pool is pool.py's
``AsyncioPool``.
"""

# httpcore's interface passes each timeout as an argument (ASYNC109 would have a scope).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import math
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import httpcore2
import httpx2
from httpcore2 import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    WriteError,
    WriteTimeout,
)

from callbridge.providers.llm.pool import AsyncioPool

__all__ = ["AsyncioBackend", "AsyncioPool", "AsyncioStream", "http_transport"]

SocketOption = tuple[Any, ...]  # what ``socket.setsockopt`` takes


class _Buffered(asyncio.Protocol):
    """What arrived on one connection, and whether it can still take writes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.eof = False
        self.closed = False
        self.error: BaseException | None = None
        self.paused = False
        self._reader: asyncio.Future[None] | None = None
        self._drainer: asyncio.Future[None] | None = None
        self._read_deadline = 0.0  # the waiting read's, loop time
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self._wake_reader()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake_reader()
        return None  # plain TCP closes itself; nothing more is written after the peer's EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._wake_reader()
        self._wake_drainer()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_drainer()

    async def readable(self, timeout: float | None) -> None:
        """Wait for bytes, the peer's EOF or the close; ``ReadTimeout`` after ``timeout``.

        A model streams a token a read: instead of a timer set and cancelled for every
        read, one timer a connection stays set and, when it fires, only moves itself to
        the waiting read's deadline if that is later (it is, as long as tokens come)."""
        loop = asyncio.get_running_loop()
        self._reader = reader = loop.create_future()
        if timeout is None:
            self._read_deadline = math.inf
        else:
            self._read_deadline = deadline = loop.time() + timeout
            timer = self._read_timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._read_timer = loop.call_at(deadline, self._read_timed_out)
        await reader

    def _read_timed_out(self) -> None:
        self._read_timer = None
        reader = self._reader
        if reader is None or reader.done():
            return  # no read waits; the next one sets a timer again
        loop = asyncio.get_running_loop()
        if self._read_deadline == math.inf:
            return  # this read waits as long as it takes
        if loop.time() < self._read_deadline:
            self._read_timer = loop.call_at(self._read_deadline, self._read_timed_out)
        else:
            reader.set_exception(ReadTimeout("timed out"))

    async def drained(self, timeout: float | None) -> None:
        self._drainer = asyncio.get_running_loop().create_future()
        await _wait(self._drainer, timeout, WriteTimeout)

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _wake_drainer(self) -> None:
        if self._drainer is not None and not self._drainer.done():
            self._drainer.set_result(None)


async def _wait(waiter: asyncio.Future[None], timeout: float | None,
                error: type[Exception]) -> None:
    if timeout is None:
        await waiter
        return
    def expire() -> None:
        if not waiter.done():
            waiter.set_exception(error("timed out"))

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await waiter
    finally:
        handle.cancel()


class AsyncioStream(httpcore2.AsyncNetworkStream):
    def __init__(self, protocol: _Buffered) -> None:
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.chunks:
            if not (protocol.eof or protocol.closed):
                await protocol.readable(timeout)
            if not protocol.chunks:
                if protocol.error is not None:
                    raise ReadError(str(protocol.error) or repr(protocol.error))
                return b""  # the peer closed: httpcore decides what that means
        data = protocol.chunks.popleft()
        if len(data) > max_bytes:
            protocol.chunks.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        transport = protocol.transport
        if transport is None or protocol.closed or transport.is_closing():
            raise WriteError("the connection is closed")
        transport.write(buffer)
        if protocol.paused:
            await protocol.drained(timeout)
            if protocol.closed:
                raise WriteError("the connection closed while writing")

    async def aclose(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        protocol = self._protocol
        assert protocol.transport is not None
        try:
            async with asyncio.timeout(timeout):
                transport = await asyncio.get_running_loop().start_tls(
                    protocol.transport, protocol, ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise ConnectTimeout("TLS handshake timed out") from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            await self.aclose()
            raise ConnectError(str(exc)) from exc
        protocol.transport = transport  # start_tls does not call connection_made again
        return AsyncioStream(protocol)

    def get_extra_info(self, info: str) -> Any:
        protocol = self._protocol
        transport = protocol.transport
        if info == "is_readable":  # an idle connection the server closed or wrote to
            return bool(protocol.chunks) or protocol.eof or protocol.closed
        if transport is None:
            return None
        key = {"ssl_object": "ssl_object", "client_addr": "sockname",
               "server_addr": "peername", "socket": "socket"}.get(info)
        return transport.get_extra_info(key) if key else None


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None, socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Buffered, host, port, local_addr=local)
        except TimeoutError as exc:
            raise ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await asyncio.get_running_loop().create_unix_connection(
                    _Buffered, path)
        except TimeoutError as exc:
            raise ConnectTimeout(f"connecting to {path} timed out") from exc
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        return AsyncioStream(protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def http_transport(
    *, limits: httpx2.Limits, http1: bool, http2: bool
) -> httpx2.AsyncHTTPTransport:
    """httpx2's transport (its request and error mapping) over a pool on ``AsyncioBackend``."""
    transport = httpx2.AsyncHTTPTransport(limits=limits, http1=http1, http2=http2)
    transport._pool = AsyncioPool(
        ssl_context=httpx2.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=http1,
        http2=http2,
        network_backend=AsyncioBackend(),
    )
    return transport
