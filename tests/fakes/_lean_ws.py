"""A lean server side of a WebSocket, for a fake that the load benchmark runs at scale.

Why: websockets' asyncio server costs ~80 µs a message (the parser's generators, the
message assembler, a task wake-up per message), and the fake Deepgram takes 25 audio
messages a second from every call, on the core the callers need. Here the client's
masked frames are parsed in ``data_received`` and whole messages go straight to the
owner's callback. The opening handshake is websockets' own (the sans-I/O
``ServerProtocol``), so upgrades are checked and answered exactly as before.

Only what a vendor's stream needs: text and binary messages (fragments joined), ping →
pong, and the closing handshake either way. ``send`` and ``close`` are coroutines that
never suspend, so code written against ``ServerConnection`` runs on it unchanged.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.speedups import apply_mask

__all__ = ["LeanServerSocket", "MessageSink"]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_NO_STATUS = 1005  # a close frame without a code
_ABNORMAL = 1006  # no close frame at all
_CLOSE_WAIT_S = 2.0


class MessageSink(Protocol):
    def message(self, data: str | bytes) -> None: ...

    def closed(self) -> None: ...


Upgrade = Callable[[Request], Awaitable[Response | None]]


class LeanServerSocket(asyncio.Protocol):
    """One accepted TCP connection: the upgrade, then frames to ``MessageSink``."""

    def __init__(self, upgrade: Upgrade, open_sink: Callable[[LeanServerSocket], MessageSink]):
        self._upgrade = upgrade
        self._open_sink = open_sink
        self._handshake: ServerProtocol | None = ServerProtocol(max_size=None)
        self._early = bytearray()  # bytes that came behind the request, before our answer
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._part_opcode = OP_TEXT
        self._transport: asyncio.Transport | None = None
        self._sink: MessageSink | None = None
        self._close_sent = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.request: Request | None = None
        self.close_code: int | None = None  # the code in the peer's close frame (1006: none)
        self.on_lost: Callable[[LeanServerSocket], None] | None = None

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            self._feed_handshake(data)
        elif self._sink is None:
            self._early += data
        else:
            self._feed_frames(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = _ABNORMAL
        if self.on_lost is not None:
            self.on_lost(self)
        for task in self._tasks:
            task.cancel()
        if self._sink is not None:
            self._sink.closed()

    # ------------------------------------------------------------ what the owner calls

    async def send(self, text: str | bytes) -> None:
        """A text frame (``str``) or a binary frame (``bytes``), written now."""
        if isinstance(text, str):
            self._write(_frame(OP_TEXT, text.encode()))
        else:
            self._write(_frame(OP_BINARY, text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the peer's answer (or 2 s) ends the socket."""
        self.close_soon(code, reason)

    def close_soon(self, code: int = 1000, reason: str = "") -> None:
        """``close`` for a caller that is not a coroutine (a handler's end)."""
        if self._close_sent or self._transport is None:
            return
        self._close_sent = True
        self._write(_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()))
        loop = asyncio.get_running_loop()
        loop.call_later(_CLOSE_WAIT_S, self._transport.close)

    @property
    def closing(self) -> bool:
        """Our close frame went out, or the transport is going: no more data frames."""
        return self._close_sent or self._transport is None or self._transport.is_closing()

    def abort(self) -> None:
        """Drop the connection now (the fake is shutting down)."""
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------ private

    def _feed_handshake(self, data: bytes) -> None:
        assert self._handshake is not None
        self._handshake.receive_data(data)
        for event in self._handshake.events_received():
            if isinstance(event, Request) and self.request is None:
                self.request = event
                task = asyncio.ensure_future(self._answer(event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: Request) -> None:
        handshake = self._handshake
        assert handshake is not None and self._transport is not None
        response = await self._upgrade(request)
        if response is None:
            response = handshake.accept(request)
        handshake.send_response(response)
        self._transport.write(b"".join(handshake.data_to_send()))
        if response.status_code != 101:
            self._transport.close()
            return
        self._handshake = None
        self._sink = self._open_sink(self)
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self._feed_frames(early)

    def _feed_frames(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if end - pos < 4:
                    break
                (n,) = struct.unpack_from("!H", buf, pos + 2)
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                (n,) = struct.unpack_from("!Q", buf, pos + 2)
                head = 10
            if not b1 & 0x80 or b0 & 0x70:
                self._protocol_error()  # unmasked client frame, or RSV bits: RFC 6455 §5.1
                return
            if end - pos < head + 4 + n:
                break
            key = bytes(buf[pos + head : pos + head + 4])
            payload = apply_mask(bytes(buf[pos + head + 4 : pos + head + 4 + n]), key)
            pos += head + 4 + n
            self._frame(b0 & 0x80 != 0, b0 & 0x0F, payload)
            if self._transport is None or self._transport.is_closing():
                break
        del buf[:pos]

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        assert self._sink is not None
        if opcode == OP_PING:
            self._write(_frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else (
                _NO_STATUS)
            if not self._close_sent:
                self._close_sent = True
                self._write(_frame(OP_CLOSE, payload[:2]))
            assert self._transport is not None
            self._transport.close()
        elif opcode == OP_CONT or not fin:
            self._parts.append(payload)
            if opcode != OP_CONT:
                self._part_opcode = opcode
            if fin:
                whole, self._parts = b"".join(self._parts), []
                self._deliver(self._part_opcode, whole)
        else:
            self._deliver(opcode, payload)

    def _deliver(self, opcode: int, payload: bytes) -> None:
        assert self._sink is not None
        if self._close_sent:
            return  # after our close frame, data frames are dropped (RFC 6455 §5.5.1)
        self._sink.message(payload.decode() if opcode == OP_TEXT else payload)

    def _protocol_error(self) -> None:
        self._write(_frame(OP_CLOSE, struct.pack("!H", 1002)))
        self._close_sent = True
        if self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


def _frame(opcode: int, payload: bytes) -> bytes:
    """A final server frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload
