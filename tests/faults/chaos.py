"""A chaos layer: a TCP proxy on 127.0.0.1 in front of one vendor fake.

Each new connection takes the next ``Plan`` (``plans`` in order, then ``default``, or
``choose(n)`` for random faults); the production client cannot tell the proxy from the
vendor. Faults are made at the wire:
- ``Refuse``: the connection is reset at once (a vendor that is down); ``go_down()``
  stops listening altogether, so connecting fails with ECONNREFUSED;
- ``HttpError``: the request (a WebSocket upgrade or an API call) is answered with a
  429/500/503 in the vendor's error shape, then the connection is closed;
- ``WsClose``: after some client bytes or server frames, the server's side sends a
  WebSocket close frame with the vendor's real code and reason (Deepgram: 1011
  ``NET-0001``), then the connection is dropped;
- ``WsGarbage``: a text frame of malformed JSON is slipped in after some server frames;
- ``Stall``: after some server bytes nothing more is relayed (the socket stays open);
- ``Cut``: after some server bytes both sides are reset (no close frame: 1006).

``spare_paths``: HTTP requests whose path starts with one of these (a client warming its
connection with ``GET /v1/models``) pass through without taking a plan, so the plans
land on the calls a test means (the chat completion). A spared request goes upstream
with ``Connection: close``: the vendor closes that connection after answering, so no
later request rides it past the plans (a kept-alive warm connection would carry the
chat completion through unharmed).

``strike(plan)`` applies a ``WsClose``, ``WsGarbage``, ``Stall`` or ``Cut`` to every live connection
now, so a test can time a fault to the caller's speech (mid-utterance, say).

Only server → client WebSocket frames are parsed (unmasked, RFC 6455 §5.2), so an
injected frame always lands on a frame boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

__all__ = [
    "ChaosProxy",
    "Cut",
    "HttpError",
    "Pass",
    "Plan",
    "Refuse",
    "Stall",
    "WsClose",
    "WsGarbage",
]


@dataclass(frozen=True)
class Pass:
    """Relay everything."""


@dataclass(frozen=True)
class Refuse:
    """Reset the connection as soon as it is accepted."""


@dataclass(frozen=True)
class HttpError:
    status: int = 503
    body: str = '{"error": {"message": "The server is overloaded.", "type": "server_error"}}'


@dataclass(frozen=True)
class WsClose:
    code: int = 1011
    reason: str = "NET-0001"
    after_up_bytes: int | None = None  # client → server bytes relayed first
    after_down_frames: int | None = None  # server → client frames relayed first


@dataclass(frozen=True)
class WsGarbage:
    after_down_frames: int = 1
    text: str = '{"type": "Results", "channel": {"alternatives": [{"transcript": '
    # A multi-context socket (ElevenLabs') routes by ``contextId``: the bad message
    # names the newest context the vendor answers (the sentence being heard; an older
    # one may still be streaming unheard), as the vendor's own message would.
    newest_context: bool = False


@dataclass(frozen=True)
class Stall:
    after_down_bytes: int = 0


@dataclass(frozen=True)
class Cut:
    after_down_bytes: int = 0


Plan = Pass | Refuse | HttpError | WsClose | WsGarbage | Stall | Cut


@dataclass
class ChaosProxy:
    upstream_port: int
    plans: list[Plan] = field(default_factory=list)
    default: Plan = field(default_factory=Pass)
    choose: Callable[[int], Plan] | None = None
    spare_paths: tuple[str, ...] = ()
    connections: int = 0
    applied: list[Plan] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _links: set[_Link] = field(default_factory=set)
    _port: int = 0

    @property
    def live(self) -> int:
        return len(self._links)

    async def strike(self, plan: WsClose | WsGarbage | Stall | Cut) -> int:
        """Break every live connection now; returns how many were hit."""
        links = list(self._links)
        for link in links:
            await link.strike(plan)
        return len(links)

    @classmethod
    def before(cls, base_url: str, plans: Sequence[Plan] = (), **kwargs: object) -> ChaosProxy:
        port = int(base_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        return cls(port, list(plans), **kwargs)  # type: ignore[arg-type]

    @property
    def port(self) -> int:
        if self._port:
            return self._port
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, base_url: str) -> str:
        """``base_url`` of the vendor fake, pointed at this proxy."""
        return base_url.replace(f":{self.upstream_port}", f":{self.port}", 1)

    async def __aenter__(self) -> ChaosProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self._port = self.port
        return self

    async def go_down(self) -> None:
        """Stop listening: new connections are refused by the OS (live ones go on)."""
        assert self._server is not None
        self._server.close()

    async def go_up(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.done.set()  # ends each connection's task without cancelling it
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._server.wait_closed()

    def _next_plan(self) -> Plan:
        n = self.connections
        self.connections += 1
        if self.plans:
            plan = self.plans.pop(0)
        elif self.choose is not None:
            plan = self.choose(n)
        else:
            plan = self.default
        self.applied.append(plan)
        return plan

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n") if self.spare_paths else b""
            path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else ""
            spared = any(path.startswith(prefix) for prefix in self.spare_paths)
            if spared:
                head = _connection_close(head)
            await self._serve(Pass() if spared else self._next_plan(), reader, writer, head)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            _reset(writer)

    async def _serve(
        self, plan: Plan, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        head: bytes,
    ) -> None:
        """``head``: the request head already read (to choose the plan), sent on first."""
        if isinstance(plan, Refuse):
            return
        if isinstance(plan, HttpError):
            await _answer_error(plan, reader, writer, head)
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            if head:
                up_writer.write(head)
            link = _Link(plan, reader, writer, up_reader, up_writer)
            self._links.add(link)
            try:
                await link.run()
            finally:
                self._links.discard(link)
        finally:
            _reset(up_writer)


class _Link:
    """One proxied connection carrying out its plan."""

    def __init__(
        self, plan: Plan, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
    ) -> None:
        self.plan = plan
        self.reader, self.writer = reader, writer
        self.up_reader, self.up_writer = up_reader, up_writer
        self.up_bytes = 0
        self.done = asyncio.Event()
        self.stalled = False
        self.contexts: list[str] = []  # context ids in the server frames, oldest first

    async def strike(self, plan: WsClose | WsGarbage | Stall | Cut) -> None:
        if isinstance(plan, WsClose):
            await self._close_frame(plan)
        elif isinstance(plan, WsGarbage):
            self.writer.write(_text_frame(self._garbage(plan)))
        elif isinstance(plan, Cut):
            self.done.set()
        else:
            self.stalled = True  # nothing more is relayed either way

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._upstream()), asyncio.create_task(self._downstream())]
        try:
            await self.done.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)

    async def _upstream(self) -> None:
        plan = self.plan
        try:
            while data := await self.reader.read(65536):
                if self.stalled:
                    continue
                self.up_writer.write(data)
                await self.up_writer.drain()
                self.up_bytes += len(data)
                if (isinstance(plan, WsClose) and plan.after_up_bytes is not None
                        and self.up_bytes >= plan.after_up_bytes):
                    await self._close_frame(plan)
            # EOF: the client closed its side (after our close frame, or on its own).
        finally:
            self.done.set()

    async def _downstream(self) -> None:
        plan, sent = self.plan, 0
        try:
            head = await self.up_reader.readuntil(b"\r\n\r\n")
            if isinstance(plan, Stall | Cut) and plan.after_down_bytes <= 0:
                await self._stall_or_cut(plan)
                return
            self.writer.write(head)
            sent += len(head)
            if not head.startswith(b"HTTP/1.1 101"):
                await self._relay_rest(plan, sent)
                return
            frames = 0
            while True:
                frame = await _read_frame(self.up_reader)
                if isinstance(plan, WsClose) and plan.after_down_frames == frames:
                    await self._close_frame(plan)
                    await asyncio.Event().wait()  # the upstream side ends the link
                if isinstance(plan, WsGarbage) and plan.after_down_frames == frames:
                    self.writer.write(_text_frame(self._garbage(plan)))
                if isinstance(plan, Stall | Cut) and sent >= plan.after_down_bytes:
                    await self._stall_or_cut(plan)
                    return
                if self.stalled or self.done.is_set():
                    continue
                self._note_context(frame)
                self.writer.write(frame)
                await self.writer.drain()
                sent += len(frame)
                frames += 1
        finally:
            self.done.set()

    def _note_context(self, frame: bytes) -> None:
        if frame[0] & 0x0F != 0x1 or b'"contextId"' not in frame:
            return  # only text frames that name a context
        with contextlib.suppress(ValueError, AttributeError):
            context = json.loads(frame[_payload_offset(frame):]).get("contextId")
            if context is not None and str(context) not in self.contexts:
                self.contexts.append(str(context))

    def _garbage(self, plan: WsGarbage) -> str:
        if not plan.newest_context or not self.contexts:
            return plan.text
        message = json.loads(plan.text)
        message["contextId"] = self.contexts[-1]
        return json.dumps(message)

    async def _relay_rest(self, plan: Plan, sent: int) -> None:
        """A plain HTTP answer (SSE, JSON): relay bytes, stalling or cutting on plan."""
        while data := await self.up_reader.read(65536):
            if isinstance(plan, Stall | Cut) and sent + len(data) > plan.after_down_bytes:
                keep = max(0, plan.after_down_bytes - sent)
                self.writer.write(data[:keep])
                await self.writer.drain()
                await self._stall_or_cut(plan)
                return
            self.writer.write(data)
            await self.writer.drain()
            sent += len(data)

    async def _stall_or_cut(self, plan: Stall | Cut) -> None:
        if isinstance(plan, Stall):
            await asyncio.Event().wait()  # until the client gives up or the proxy stops

    async def _close_frame(self, plan: WsClose) -> None:
        if self.done.is_set():
            return
        self.stalled = True  # nothing relayed after the close frame
        payload = struct.pack("!H", plan.code) + plan.reason.encode()
        self.writer.write(bytes([0x88, len(payload)]) + payload)
        with contextlib.suppress(OSError):
            await self.writer.drain()
        # As a server does after its close frame (RFC 6455 §7.1.1), the TCP connection
        # is closed first, gracefully, once the client has had a moment to read it.
        asyncio.get_running_loop().call_later(0.05, self._hang_up)

    def _hang_up(self) -> None:
        self.writer.close()
        self.done.set()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    extra = b""
    if length == 126:
        extra = await reader.readexactly(2)
        length = struct.unpack("!H", extra)[0]
    elif length == 127:
        extra = await reader.readexactly(8)
        length = struct.unpack("!Q", extra)[0]
    mask = await reader.readexactly(4) if head[1] & 0x80 else b""
    return head + extra + mask + await reader.readexactly(length)


def _payload_offset(frame: bytes) -> int:
    length = frame[1] & 0x7F
    offset = 2 + {126: 2, 127: 8}.get(length, 0)
    return offset + (4 if frame[1] & 0x80 else 0)


def _connection_close(head: bytes) -> bytes:
    """The request head with ``Connection: close`` instead of any keep-alive."""
    lines = [line for line in head.split(b"\r\n")
             if line and not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


def _text_frame(text: str) -> bytes:
    data = text.encode()
    if len(data) < 126:
        return bytes([0x81, len(data)]) + data
    return bytes([0x81, 126]) + struct.pack("!H", len(data)) + data


async def _answer_error(
    plan: HttpError, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
) -> None:
    head = head or await reader.readuntil(b"\r\n\r\n")
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            await reader.readexactly(int(value.strip()))
    body = plan.body.encode()
    json.loads(body)  # the plan's body must be the vendor's JSON error shape
    writer.write(
        f"HTTP/1.1 {plan.status} Error\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (SO_LINGER 0), as a dying host or proxy does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
