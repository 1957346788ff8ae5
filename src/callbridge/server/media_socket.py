"""``/media`` served outside ASGI: WebSocket framing on an ``asyncio.Protocol``.

Through uvicorn and Starlette each inbound Media Streams message became an ASGI event
dict on a queue, a task switch into the handler, and a pause and resume of the socket's
reading; at 50 calls that was 15 % of a core before any audio work (README, "Calls per
core"). Here websockets' sans-I/O ``ServerProtocol`` parses the frames in
``data_received`` and each message goes straight to ``MediaStream`` (``server/media.py``);
replies are written straight to the transport, and a sender waits only while the
transport says its buffer is full (``pause_writing``), so a peer that stops reading
holds up its own call and never grows our memory.

Nearly every frame is a ``media`` message, in or out: those two shapes are read and
written by hand (``media_wire.py``). websockets reads every other frame, and everything
once the socket is not open, so its errors, limits and close codes stand.

One listener still serves everything: uvicorn hands every WebSocket upgrade to the class
in ``Config(ws=...)``; ``upgrade_protocol(edge)`` is that class. It serves ``/media``
itself and passes any other path to uvicorn's own WebSocket protocol, so FastAPI keeps
whatever else speaks WebSocket, and the webhooks and the API stay plain HTTP as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
from functools import partial
from typing import Any, ClassVar, cast
from urllib.parse import unquote

from starlette.requests import HTTPConnection
from uvicorn.config import Config
from uvicorn.protocols.utils import get_remote_addr, is_ssl
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from callbridge.server import media
from callbridge.server.edge import Edge
from callbridge.server.media_admission import refuse_handshake
from callbridge.server.media_wire import FrameSplitter, text_frame
from callbridge.twilio.transport import LineClosed

__all__ = ["CLOSE_TIMEOUT_S", "MEDIA_PATH", "MediaSocket", "upgrade_protocol"]

log = logging.getLogger(__name__)

MEDIA_PATH = "/media"
CLOSE_TIMEOUT_S = 5.0
"""After our close frame (or the server's end of the connection) the peer has this long to
answer and read what is left; then the connection is aborted, so a peer that stopped
reading cannot keep a socket and its buffer forever."""


class MediaSocket(asyncio.Protocol):
    """One ``/media`` connection: handshake, frames in, frames out, closing."""

    def __init__(self, edge: Edge, config: Config, server_state: ServerState) -> None:
        self.edge = edge
        self.connections = server_state.connections
        self.ws = ServerProtocol(max_size=config.ws_max_size)
        self.stream: media.MediaStream | None = None
        self.transport: asyncio.Transport | None = None
        self.tasks = server_state.tasks
        self._loop = asyncio.get_running_loop()
        self._parts: list[bytes] = []  # a fragmented message so far
        self._is_text = True
        self._writable: asyncio.Future[None] | None = None  # set while writes are paused
        self._lost = False
        self._we_closed = False  # our close frame went out (the peer's may come first)
        self._closer: asyncio.TimerHandle | None = None
        self._ping_interval = config.ws_ping_interval
        self._ping_timeout = config.ws_ping_timeout
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._plain = False  # the handshake is done and agreed no extensions
        self._fragmented = False  # in a fragmented message: websockets reads the rest
        self.splitter = FrameSplitter(config.ws_max_size, self._feed_ws)
        # The socket's bytes straight to the splitter: no frame of ours in between (every
        # message of every call; ``UpgradeRouter`` looks it up per message).
        self.data_received = self.splitter.feed  # type: ignore[method-assign]

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(cast(Any, self))  # uvicorn asks it to ``shutdown`` on exit

    def data_received(self, data: bytes) -> None:
        self.splitter.feed(data)

    def eof_received(self) -> bool | None:
        self.splitter.eof()
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.connections.discard(cast(Any, self))
        for timer in (self._closer, self._ping_timer):
            if timer is not None:
                timer.cancel()
        self._wake_writers()
        if self.stream is not None:
            self.stream.context.run(self.stream.on_closed)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writers()

    def shutdown(self) -> None:
        """uvicorn is stopping (after a drain, or a second signal): close 1012."""
        if self.stream is not None and self.ws.state is State.OPEN:
            self.close(1012, "server restarting")
            self.stream.context.run(self.stream.on_closed)
        elif self.transport is not None:
            self.transport.close()

    # -- what ``MediaStream`` uses (``media.StreamSocket``) -------------------------------

    async def send_text(self, text: str) -> None:
        while self._writable is not None and not self._lost:
            await asyncio.shield(self._writable)
        if self._lost or self.ws.state is not State.OPEN:
            raise LineClosed("socket closed")
        self.ws.send_text(text.encode())
        self._flush()

    def write_text_now(self, utf8: bytes) -> bool:
        """Write one text frame now, built here; False (nothing written) while writes are
        paused or the socket is not open: then ``send_text`` waits or raises. The caller
        keeps its own sends in order (``TwilioTransport``)."""
        if self._writable is not None or self._lost or not self._plain:
            return False
        if self.ws.state is not State.OPEN:
            return False
        assert self.transport is not None
        self.transport.write(text_frame(utf8))
        return True

    def close(self, code: int, reason: str) -> None:
        if self._lost or self.ws.state is not State.OPEN:
            return
        try:
            self.ws.send_close(code, reason)
        except InvalidState:  # pragma: no cover - checked just above
            return
        self._we_closed = True
        self.splitter.fast = self.splitter.open = False
        self._flush()
        self._close_soon()

    def pause_reading(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.resume_reading()

    # -- inside -------------------------------------------------------------------------

    def _feed_ws(self, data: bytes) -> None:
        """Bytes for websockets (the splitter decides which): its events, then its answer."""
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if type(event) is Frame:
                self._frame(event)
            elif isinstance(event, Request):
                self._handshake(event)
        self._flush()
        frames = self.splitter
        frames.open = self._plain and not self._we_closed and ws.state is State.OPEN
        frames.fast = frames.open and not self._fragmented

    def _handshake(self, request: Request) -> None:
        response = self.ws.accept(request)  # a malformed upgrade gets its 4xx here
        if response.status_code == 101 and refuse_handshake(self.edge, self._conn(request)):
            response = self.ws.reject(403, "Forbidden\n")
        self.ws.send_response(response)
        if response.status_code != 101:
            return  # ``_flush`` sends it and closes
        self._plain = not self.ws.extensions  # (none are offered: always, today)
        stream = self.stream = media.MediaStream(self.edge, self, self.tasks)
        # Each text in the stream's context, with no Python frame of ours in between
        # (mypy's partial plugin misreads ``Context.run``'s ``*args``).
        self.splitter.on_text = partial(stream.context.run, stream.on_text)  # type: ignore[call-arg]
        stream.context.run(stream.opened)
        self._schedule_ping()

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._is_text = opcode is Opcode.TEXT
            self._fragmented = not frame.fin
            if frame.fin:
                self._message(frame.data)
            else:
                self._parts = [bytes(frame.data)]
            return
        if opcode is Opcode.CONT:
            self._parts.append(bytes(frame.data))
            if frame.fin:
                self._fragmented = False
                data, self._parts = b"".join(self._parts), []
                self._message(data)
        elif opcode is Opcode.CLOSE:
            if self.stream is not None:
                self.stream.context.run(self.stream.on_closed)
        elif opcode is Opcode.PONG and self._ping_payload == bytes(frame.data):
            self._ping_payload = None
            self._schedule_ping()
        # PING: the protocol has queued the pong; ``_flush`` sends it

    def _message(self, data: bytes | bytearray | memoryview) -> None:
        stream = self.stream
        if stream is None or self._we_closed:
            return  # past our close frame: only the peer's close matters now
        if self._is_text:
            stream.context.run(stream.on_text, bytes(data))
        else:
            stream.context.run(stream.on_binary, len(data))

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or self._lost:
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            else:  # the protocol is done with the connection (it says so with b"")
                transport.close()
                self._close_soon()

    def _close_soon(self) -> None:
        if self._closer is None and not self._lost:
            self._closer = self._loop.call_later(CLOSE_TIMEOUT_S, self._abort)

    def _abort(self) -> None:
        self._closer = None
        if self.transport is not None and not self._lost:
            self.transport.abort()

    def _wake_writers(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _schedule_ping(self) -> None:
        if self._ping_interval and not self._lost:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        """Keepalive: a peer gone without a FIN is noticed within interval + timeout."""
        self._ping_timer = None
        if self._lost or self.ws.state is not State.OPEN:
            return
        self._ping_payload = os.urandom(4)
        self.ws.send_ping(self._ping_payload)
        self._flush()
        if self._ping_timeout:
            self._ping_timer = self._loop.call_later(self._ping_timeout, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        self._ping_timer = None
        if self._ping_payload is None or self._lost:
            return
        self.splitter.fast = self.splitter.open = False
        self.ws.fail(1011, "keepalive ping timeout")
        self._flush()
        if self.stream is not None:
            self.stream.context.run(self.stream.on_closed)

    def _conn(self, request: Request) -> HTTPConnection:
        """The handshake as Starlette sees a request: what ``Edge.url_of`` reads."""
        raw_path, _, query = request.path.partition("?")
        assert self.transport is not None
        scope = {
            "type": "websocket",
            "scheme": "wss" if is_ssl(self.transport) else "ws",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in request.headers.raw_items()
            ],
            "client": get_remote_addr(self.transport),
        }
        return HTTPConnection(scope)


class UpgradeRouter(asyncio.Protocol):
    """uvicorn's WebSocket protocol class: ``/media`` here, any other path to uvicorn's.

    uvicorn builds it after reading an upgrade request, then replays that request into
    ``data_received``; the path decides which protocol serves the connection.
    """

    edge: ClassVar[Edge]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._transport: asyncio.BaseTransport | None = None
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            inner = self._inner = self._protocol_for(data)
            assert self._transport is not None
            inner.connection_made(self._transport)
        inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def _protocol_for(self, request: bytes) -> asyncio.Protocol:
        if _path_of(request) == MEDIA_PATH:
            return MediaSocket(self.edge, self._config, self._server_state)
        assert AutoWebSocketsProtocol is not None  # websockets is a dependency
        return AutoWebSocketsProtocol(
            config=self._config, server_state=self._server_state, app_state=self._app_state
        )


def _path_of(request: bytes) -> str:
    """The decoded path of an HTTP request's first line ("" when it has none)."""
    line = request.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3:
        return ""
    return unquote(parts[1].split(b"?", 1)[0].decode("latin-1"))


def upgrade_protocol(edge: Edge) -> type[asyncio.Protocol]:
    """The ``Config(ws=...)`` class for an app whose ``/media`` is served by ``edge``."""
    return type("MediaUpgradeRouter", (UpgradeRouter,), {"edge": edge})
