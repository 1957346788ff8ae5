"""A fake's websockets-style handler served on ``_lean_ws``: ``recv``/``send``/``close``.

Why: a handler written against websockets' ``ServerConnection`` (a ``recv()`` loop, awaited
``send``s) pays websockets' asyncio machinery per message: a send context, a lock and a
frame object for every ``send``. The ElevenLabs fake sends ~30 audio messages a reply,
200 calls at a time in the load benchmark, on the callers' core. Here the same handler
runs on ``LeanServerSocket``: ``send`` writes the frame at once, ``recv`` takes the next
message the socket parsed. The upgrade and the bytes on the wire are unchanged.

Only what the fakes use of ``ServerConnection``: ``request``, ``recv``, ``send``,
``close``, ``close_code``; after the socket closed, ``recv`` and ``send`` raise
``ConnectionClosed`` as websockets' do.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close
from websockets.http11 import Request

from fakes._lean_ws import LeanServerSocket, Upgrade

__all__ = ["LeanConnection", "LeanServer", "serve_handler"]

_log = logging.getLogger(__name__)

Handler = Callable[["LeanConnection"], Awaitable[None]]


class LeanConnection:
    """The ``ServerConnection`` subset a fake's handler uses, over a ``LeanServerSocket``."""

    def __init__(self, sock: LeanServerSocket) -> None:
        assert sock.request is not None
        self.sock = sock
        self.request: Request = sock.request
        self._inbox: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._over = False
        self._gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def close_code(self) -> int | None:
        """The peer's close code once the socket is closed (1006: it sent none)."""
        return self.sock.close_code if self._over else None

    # ------------------------------------------------------------ MessageSink

    def message(self, data: str | bytes) -> None:
        self._inbox.append(data)
        self._wake()

    def closed(self) -> None:
        self._over = True
        self._wake()
        if not self._gone.done():
            self._gone.set_result(None)

    # ------------------------------------------------------------ ServerConnection

    async def recv(self) -> str | bytes:
        while not self._inbox:
            if self._over:
                raise self._closed_error()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._inbox.popleft()

    async def send(self, message: str | bytes) -> None:
        if self._over or self.sock.closing:
            raise self._closed_error()
        await self.sock.send(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send our close frame and wait for the socket to end (the peer's answer, or the
        socket's own 2 s limit), as websockets' ``close`` does."""
        self.sock.close_soon(code, reason)
        await asyncio.shield(self._gone)

    # ------------------------------------------------------------ private

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _closed_error(self) -> ConnectionClosed:
        code = self.sock.close_code
        rcvd = None if code in (None, 1005, 1006) else Close(code, "")
        if code in (1000, 1001):
            return ConnectionClosedOK(rcvd, None)
        return ConnectionClosedError(rcvd, None)


class LeanServer:
    """The listening socket and the handlers it started; ``close`` ends them all."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.connections: set[LeanServerSocket] = set()

    @property
    def sockets(self) -> Any:
        assert self.server is not None
        return self.server.sockets

    def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        for sock in self.connections:
            sock.abort()

    async def wait_closed(self) -> None:
        assert self.server is not None
        if self.tasks:
            await asyncio.wait(list(self.tasks))
        await self.server.wait_closed()


async def serve_handler(upgrade: Upgrade, handler: Handler) -> LeanServer:
    """Listen on 127.0.0.1 (a free port); each upgraded socket runs ``handler`` in a task."""
    lean = LeanServer()

    def open_sink(sock: LeanServerSocket) -> LeanConnection:
        connection = LeanConnection(sock)
        task = asyncio.ensure_future(handler(connection))
        lean.tasks.add(task)
        task.add_done_callback(lean.tasks.discard)
        task.add_done_callback(lambda done: _handler_ended(sock, done))
        return connection

    def accept() -> LeanServerSocket:
        sock = LeanServerSocket(upgrade, open_sink)
        lean.connections.add(sock)
        sock.on_lost = lean.connections.discard
        return sock

    loop = asyncio.get_running_loop()
    lean.server = await loop.create_server(accept, "127.0.0.1", 0)
    return lean


def _handler_ended(sock: LeanServerSocket, task: asyncio.Task[None]) -> None:
    """As websockets does: a handler that returns closes with 1000, one that fails with
    1011 (and the failure is logged)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None or isinstance(exc, ConnectionClosed):
        sock.close_soon(1000)
    else:
        _log.error("connection handler failed", exc_info=exc)
        sock.close_soon(1011, "internal error")
