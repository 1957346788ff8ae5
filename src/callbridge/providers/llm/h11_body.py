"""An HTTP/1.1 response body read from httpcore's connection in one step a network read.

httpcore hands each piece of a streamed body up through four async generators (its
pool's stream, its connection's, the body reader, an error mapper of ours) with two
context managers and two ``next_event`` calls around every network read, and a model
streams one token a read. ``H11Body`` is the same loop as httpcore's
``_receive_response_body`` without those layers: h11 (still the parser, httpcore's own
``h11.Connection`` for that connection) says what it needs, the connection's network
stream reads it, and every ``Data`` event one read completes is returned together.
Everything else stays httpcore's: the request went out through its pool and connection,
and ``aclose`` is its pool stream's, which hands a body read to its end back to the pool
and closes a connection whose body was not (httpcore decides from h11's states, so a
cancelled or failed read never leaves a half-read connection in the pool).

It reaches into httpcore (the pool stream's body, the body's connection, that
connection's h11 state and network stream): ``lean_body`` checks each type and returns
None for anything else (HTTP/2, a proxy's tunnel, a new httpcore), and the caller then
reads httpcore's way. A test checks the lean way is the one taken.
"""

from __future__ import annotations

from typing import Final

import h11
import httpcore2
import httpx2
from httpcore2._async.connection_pool import PoolByteStream
from httpcore2._async.http11 import HTTP11ConnectionByteStream

__all__ = ["H11Body", "lean_body"]

_ENDS: Final = (h11.EndOfMessage, h11.ConnectionClosed)

HTTPCORE_ERRORS: Final = (
    httpcore2.TimeoutException, httpcore2.NetworkError, httpcore2.ProtocolError,
    httpcore2.ProxyError, httpcore2.UnsupportedProtocol,
)


class H11Body:
    """A response body as an async iterator of what each network read completed
    (errors as httpx2's, like httpx2's own streams)."""

    __slots__ = ("_close", "_ended", "_error", "_network", "_read_size", "_state", "_timeout")

    def __init__(self, pool_stream: PoolByteStream, connection: httpcore2.AsyncHTTP11Connection,
                 timeout: float | None) -> None:
        self._state: h11.Connection = connection._h11_state
        self._network: httpcore2.AsyncNetworkStream = connection._network_stream
        self._read_size: int = connection.READ_NUM_BYTES
        self._timeout = timeout
        self._close = pool_stream.aclose
        self._ended = False
        self._error: httpx2.RemoteProtocolError | None = None  # after what came before it

    def __aiter__(self) -> H11Body:
        return self

    async def __anext__(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        if self._error is not None:
            raise self._error
        state = self._state
        parts: list[bytes | bytearray] = []
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError as exc:
                error = httpx2.RemoteProtocolError(str(exc))
                error.__cause__ = exc
                if not parts:
                    raise error from exc
                self._error = error  # the bytes before the fault are the body's
                return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
            if event is h11.NEED_DATA:
                if parts:
                    return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
                await self._read()
            elif type(event) is h11.Data:
                parts.append(event.data)
            elif type(event) in _ENDS or event is h11.PAUSED:
                self._ended = True  # h11 would wait for the next response's bytes
                if parts:
                    return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
                raise StopAsyncIteration

    async def _read(self) -> None:
        try:
            data = await self._network.read(self._read_size, self._timeout)
        except HTTPCORE_ERRORS as exc:
            raise as_httpx_error(exc) from exc
        if not data and self._state.their_state is h11.SEND_RESPONSE:
            raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")
        self._state.receive_data(data)

    async def aclose(self) -> None:
        """httpcore's: the connection back to the pool if the body was read to its end,
        else closed."""
        try:
            await self._close()
        except HTTPCORE_ERRORS as exc:
            raise as_httpx_error(exc) from exc


def lean_body(stream: object, timeout: float | None) -> H11Body | None:
    """``H11Body`` for httpcore's pooled HTTP/1.1 body ``stream``, else None."""
    if type(stream) is not PoolByteStream:
        return None
    body = stream._stream
    if type(body) is not HTTP11ConnectionByteStream:
        return None
    connection = body._connection
    if type(connection) is not httpcore2.AsyncHTTP11Connection:
        return None
    return H11Body(stream, connection, timeout)


def as_httpx_error(exc: Exception) -> httpx2.TransportError:
    """httpcore's exception as httpx2 raises it: the class of the same name (httpx2
    maps them one to one), e.g. ``ReadTimeout`` → ``httpx2.ReadTimeout``."""
    for cls in type(exc).__mro__:
        mapped = getattr(httpx2, cls.__name__, None)
        if isinstance(mapped, type) and issubclass(mapped, httpx2.TransportError):
            return mapped(str(exc))
    return httpx2.TransportError(str(exc))
