"""The media path's hand-made WebSocket framing (``server/media_wire.py``) against
websockets' own: the frames written here are the bytes websockets writes, and a socket
that reads its common frames by hand does exactly what it did when websockets read every
byte, for any stream of frames (valid, malformed, fuzzed), cut anywhere."""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import twilio_stream as tw
from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.utils import apply_mask

from callbridge.server import media
from callbridge.server.app import create_app, uvicorn_config
from callbridge.server.media_socket import MediaSocket
from callbridge.server.media_wire import (
    HOLD_MAX,
    NEED_MORE,
    NOT_FAST,
    fast_frame,
    frame_length,
    text_frame,
)
from callbridge.settings import Settings
from callbridge.twilio.transport import LineClosed

MAX_SIZE = 6000
KEY = b"\x5a\x13\xc4\x7e"
REQUEST = (
    b"GET /media HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def raw(first: int, payload: bytes, *, key: bytes | None = KEY, width: int = 0) -> bytes:
    """A client frame as bytes: first header byte, payload, mask key (None: unmasked),
    and the length's width (0: the shortest; 2 or 8 bytes: that one, even if longer)."""
    n = len(payload)
    masked = 0x80 if key is not None else 0
    if width == 8 or (width == 0 and n >= 1 << 16):
        head = bytes((first, masked | 127)) + n.to_bytes(8, "big")
    elif width == 2 or (width == 0 and n >= 126):
        head = bytes((first, masked | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, masked | n))
    return head + (key + apply_mask(payload, key) if key is not None else payload)


MEDIA = tw.media("MZ" + "0" * 32, bytes(range(160)), seq=3, chunk=2, timestamp_ms=20).encode()
CORPUS: dict[str, bytes] = {
    "media": raw(0x81, MEDIA),
    "media, another mask": raw(0x81, MEDIA, key=b"\x00\xff\x10\x01"),
    "short text": raw(0x81, b'{"event":"mark"}'),
    "empty text": raw(0x81, b""),
    "text, 16-bit length for 5 bytes": raw(0x81, b"hello", width=2),
    "text, 64-bit length": raw(0x81, b"long form", width=8),
    "text, not UTF-8": raw(0x81, b"\xff\xfe\x00"),
    "long text": raw(0x81, b"z" * (HOLD_MAX + 100)),  # held here only if it comes whole
    "text the stream closes on": raw(0x81, b"close please"),
    "binary": raw(0x82, b"\x00\x01\x02"),
    "ping": raw(0x89, b"p1"),
    "pong": raw(0x8A, b"xx"),
    "first fragment": raw(0x01, b"ab"),
    "middle fragment": raw(0x00, b"cd"),
    "last fragment": raw(0x80, b"ef"),
    "close 1000": raw(0x88, (1000).to_bytes(2, "big") + b"bye"),
    "close, too short": raw(0x88, b"\x03"),
    "unmasked text": raw(0x81, b"hi", key=None),
    "reserved bit": raw(0xC1, b"hi"),
    "bad opcode": raw(0x83, b"hi"),
    "too big": raw(0x81, b"x" * (MAX_SIZE + 1)),
    "too big, 64-bit": raw(0x81, b"y" * 10, width=8)[:2] + (1 << 40).to_bytes(8, "big"),
    "long ping": raw(0x89, b"p" * 126),
    "fragmented ping": raw(0x09, b"p"),
}
FUZZ = [CORPUS["media"], CORPUS["short text"], CORPUS["ping"]]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.ended: list[str] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_closing(self) -> bool:
        return bool(self.ended)

    def close(self) -> None:
        self.ended.append("close")

    def abort(self) -> None:
        self.ended.append("abort")

    def pause_reading(self) -> None:
        self.ended.append("pause")

    def resume_reading(self) -> None:
        self.ended.append("resume")


class Recorder:
    """Stands in for ``MediaStream``: what the socket hands the stream, in order. It
    closes the socket on one text, as a stream refusing a frame does."""

    def __init__(self, edge: Any, socket: MediaSocket, tasks: Any = None) -> None:
        self.socket = socket
        self.context = contextvars.copy_context()
        self.calls: list[tuple[str, object]] = []

    def opened(self) -> None:
        self.calls.append(("opened", None))

    def on_text(self, payload: bytes) -> None:
        self.calls.append(("text", payload))
        if payload == b"close please":
            self.socket.close(1008, "refused")

    def on_binary(self, size: int) -> None:
        self.calls.append(("binary", size))

    def on_closed(self) -> None:
        self.calls.append(("closed", None))


class WebsocketsOnly(MediaSocket):
    """The socket as it was: websockets reads every byte."""

    def data_received(self, data: bytes) -> None:
        self._feed_ws(data)

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None


def _outcome(socket: MediaSocket) -> tuple[object, ...]:
    transport = socket.transport
    assert isinstance(transport, FakeTransport)
    calls = socket.stream.calls if isinstance(socket.stream, Recorder) else None
    written = re.sub(rb"\r\nDate: [^\r]*", b"", bytes(transport.written))  # the clock's
    return (calls, written, transport.ended, socket.ws.state)


def _run(
    config: Config, stream: bytes, cuts: list[int], eof: bool, request_cuts: tuple[int, ...] = ()
) -> None:
    """Feed the upgrade request (cut at ``request_cuts``), then ``stream`` cut at
    ``cuts``; websockets alone gets the same bytes one at a time. Every outcome must
    match at every step.

    One byte at a time, websockets hands over each frame before it reads the next: the
    order the socket keeps however the stream is cut (given a whole read, websockets
    parses all of it first, so a protocol error later in the read could beat the close
    an earlier frame led to). The request ends a read of its own, as in production
    (uvicorn replays it alone; a client waits for the 101 before it sends a frame).
    """

    async def both() -> None:
        sockets = [
            kind(config.app.state.edge, config, ServerState())  # type: ignore[attr-defined]
            for kind in (MediaSocket, WebsocketsOnly)
        ]
        for socket in sockets:
            socket.connection_made(FakeTransport())
        for data, at in ((REQUEST, request_cuts), (stream, cuts)):
            pos = 0
            for cut in [*sorted(set(at)), len(data)]:
                chunk, pos = data[pos:cut], max(pos, cut)
                if chunk:
                    sockets[0].data_received(chunk)
                    for i in range(len(chunk)):
                        sockets[1].data_received(chunk[i : i + 1])
                    assert _outcome(sockets[0]) == _outcome(sockets[1])
        if eof:
            for socket in sockets:
                socket.eof_received()
            assert _outcome(sockets[0]) == _outcome(sockets[1])
        for socket in sockets:
            socket.connection_lost(None)
        assert _outcome(sockets[0]) == _outcome(sockets[1])

    asyncio.run(both())


@pytest.fixture
def config(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setattr(media, "MediaStream", Recorder)
    app = create_app(make_settings())
    return uvicorn_config(app, "127.0.0.1", 0, ws_max_size=MAX_SIZE, ws_ping_interval=None)


frames = st.one_of(
    st.sampled_from(sorted(CORPUS)).map(CORPUS.__getitem__),
    st.binary(min_size=1, max_size=12),  # garbage
    st.tuples(st.sampled_from(FUZZ), st.integers(0, 400), st.integers(0, 255)).map(
        lambda f: f[0][: f[1]] + bytes((f[2],)) + f[0][f[1] + 1 :]  # one byte changed
    ),
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sequence=st.lists(frames, max_size=8),
    cuts=st.lists(st.integers(0, 14000), max_size=8),
    eof=st.booleans(),
    request_cuts=st.lists(st.integers(1, len(REQUEST) - 1), max_size=3).map(tuple),
)
def test_any_stream_cut_anywhere_is_read_as_websockets_reads_it(
    config: Config,
    sequence: list[bytes],
    cuts: list[int],
    eof: bool,
    request_cuts: tuple[int, ...],
) -> None:
    _run(config, b"".join(sequence), cuts, eof, request_cuts)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_kind_of_frame_between_media_frames_byte_by_byte(config: Config, name: str) -> None:
    stream = CORPUS["media"] + CORPUS[name] + CORPUS["media"] * 2
    _run(config, stream, list(range(len(stream))), eof=True, request_cuts=(1, 2, 50))
    _run(config, stream, [3], eof=False)


VALID_OTHERS = {
    "ping": CORPUS["ping"],
    "pong": CORPUS["pong"],
    "binary": CORPUS["binary"],
    "64-bit length": CORPUS["text, 64-bit length"],
    "fragments": CORPUS["first fragment"] + CORPUS["middle fragment"] + CORPUS["last fragment"],
}


@pytest.mark.parametrize("name", sorted(VALID_OTHERS))
@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_the_common_frame_is_read_by_hand_and_the_rest_by_websockets(
    config: Config, name: str, byte_by_byte: bool
) -> None:
    """Not just the same outcome: websockets gets exactly the other frames' bytes, and
    the media frames around them are read here, however the reads fall."""
    other = VALID_OTHERS[name]

    async def go() -> None:
        socket = MediaSocket(config.app.state.edge, config, ServerState())  # type: ignore[attr-defined]
        socket.connection_made(FakeTransport())
        fed: list[bytes] = []
        feed_ws = socket._feed_ws

        def spy(data: bytes) -> None:
            fed.append(data)
            feed_ws(data)

        socket.splitter._to_ws = spy
        stream = CORPUS["media"] * 2 + other + CORPUS["media"] + other + CORPUS["media"]
        for data in (REQUEST, stream):
            step = 1 if byte_by_byte else len(data)
            for i in range(0, len(data), step):
                socket.data_received(data[i : i + step])
        assert b"".join(fed) == REQUEST + other * 2
        assert isinstance(socket.stream, Recorder)
        texts = [p for kind, p in socket.stream.calls if kind == "text"]
        assert texts.count(MEDIA) == 4
        assert socket.splitter.fast
        socket.connection_lost(None)

    asyncio.run(go())


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 300, 65535, 65536, 70000])
def test_a_text_frame_built_here_is_websockets_own(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_frame_length_is_known_once_the_header_is(name: str) -> None:
    frame = CORPUS[name]
    if name.startswith("too big, 64"):
        return  # its header is all there is of it
    header = {0: 2, 126: 4, 127: 10}.get(frame[1] & 0x7F, 2)
    for n in range(len(frame) + 1):
        assert frame_length(frame[:n]) == (None if n < header else len(frame))


def test_fast_frame_takes_only_the_common_shape() -> None:
    media = CORPUS["media"]
    start, end = fast_frame(b"junk" + media + b"more", 4, MAX_SIZE)
    assert (start, end) == (4 + 8, 4 + len(media))
    for cut in range(len(media)):
        end = len(media) if cut >= 4 else 0  # known once the 16-bit length is
        assert fast_frame(media[:cut], 0, MAX_SIZE) == (NEED_MORE, end)
    short = CORPUS["short text"]
    assert fast_frame(short, 0, MAX_SIZE) == (6, len(short))
    for name in ("binary", "ping", "first fragment", "unmasked text", "reserved bit",
                 "text, 64-bit length", "too big"):  # fmt: skip
        assert fast_frame(CORPUS[name], 0, MAX_SIZE) == (NOT_FAST, 0), name
    assert fast_frame(media, 0, len(MEDIA) - 1) == (NOT_FAST, 0)


def test_a_frame_written_at_once_is_what_send_text_writes(config: Config) -> None:
    async def go() -> None:
        socket = MediaSocket(config.app.state.edge, config, ServerState())  # type: ignore[attr-defined]
        transport = FakeTransport()
        socket.connection_made(transport)
        assert not socket.write_text_now(MEDIA)  # no handshake yet
        socket.data_received(REQUEST)
        for message in (MEDIA, b"x" * 70000, b"", "é".encode()):
            before = len(transport.written)
            assert socket.write_text_now(message)
            at_once = bytes(transport.written[before:])
            await socket.send_text(message.decode())
            assert transport.written[before:] == at_once * 2
        socket.pause_writing()
        assert not socket.write_text_now(MEDIA)  # the sender waits in ``send_text``
        socket.resume_writing()
        assert socket.write_text_now(MEDIA)
        socket.close(1000, "")
        assert not socket.write_text_now(MEDIA)
        with pytest.raises(LineClosed):
            await socket.send_text("late")
        socket.connection_lost(None)

    asyncio.run(go())


def test_a_long_frame_cut_short_is_not_held_here(config: Config) -> None:
    """Held bytes are copied on every read: past ``HOLD_MAX`` websockets buffers the
    frame instead, and the common frames after it are read here again."""
    long = CORPUS["long text"]

    async def go() -> None:
        socket = MediaSocket(config.app.state.edge, config, ServerState())  # type: ignore[attr-defined]
        socket.connection_made(FakeTransport())
        fed: list[int] = []
        feed_ws = socket._feed_ws

        def spy(data: bytes) -> None:
            fed.append(len(data))
            feed_ws(data)

        socket.splitter._to_ws = spy
        socket.data_received(REQUEST)
        socket.data_received(long)  # whole: read here
        socket.data_received(CORPUS["media"][:100])  # held
        socket.data_received(CORPUS["media"][100:] + long[:1000])  # too long to hold
        for i in range(1000, len(long), 1000):
            socket.data_received(long[i : i + 1000])
        socket.data_received(CORPUS["media"])
        assert fed == [len(REQUEST), *(len(long[i : i + 1000]) for i in range(0, len(long), 1000))]
        assert isinstance(socket.stream, Recorder)
        texts = [p for kind, p in socket.stream.calls if kind == "text"]
        text = b"z" * (HOLD_MAX + 100)
        assert texts == [text, MEDIA, text, MEDIA]
        socket.connection_lost(None)

    asyncio.run(go())
