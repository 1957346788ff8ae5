"""The vendors' client WebSocket: pooled masks, frames websockets itself parses, and a
send that writes at once or says it cannot."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import websockets.frames
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from callbridge.providers import ws_client
from callbridge.providers.ws_client import (
    MaskSource,
    PooledMaskProtocol,
    VendorConnection,
    encode_client_frame,
)
from providers_cloud.helpers import wait_for


def test_masks_are_successive_4_byte_slices_of_urandom_each_used_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = itertools.count()
    fetched: list[int] = []

    def urandom(size: int) -> bytes:
        fetched.append(size)
        return bytes(next(counter) % 256 for _ in range(size))

    monkeypatch.setattr(ws_client.os, "urandom", urandom)
    masks = MaskSource(pool_bytes=8)
    taken = [masks.take() for _ in range(5)]
    assert taken == [bytes([0, 1, 2, 3]), bytes([4, 5, 6, 7]), bytes([8, 9, 10, 11]),
                     bytes([12, 13, 14, 15]), bytes([16, 17, 18, 19])]
    assert fetched == [8, 8, 8]  # a system call per two keys here, per 256 by default


def test_masks_from_the_real_source_differ() -> None:
    masks = MaskSource()
    keys = [masks.take() for _ in range(600)]  # crosses two refills
    assert all(len(key) == 4 for key in keys)
    # 600 random 32-bit keys collide with probability ~4e-5; a reused pool would repeat.
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("size", [1, 3, 6])
def test_a_pool_holds_whole_keys(size: int) -> None:
    with pytest.raises(ValueError):
        MaskSource(pool_bytes=size)


_LENGTHS = (0, 1, 125, 126, 127, 65535, 65536, 70000)
_CASES = [
    *((Opcode.BINARY, True, n) for n in _LENGTHS),
    *((Opcode.TEXT, True, n) for n in _LENGTHS),
    *((Opcode.BINARY, False, n) for n in _LENGTHS),
    *((Opcode.PING, True, n) for n in (0, 4, 125)),  # control frames are short
]


@pytest.mark.parametrize(("opcode", "fin", "length"), _CASES)
def test_frames_are_what_websockets_would_send_with_the_same_mask(
    monkeypatch: pytest.MonkeyPatch, opcode: Opcode, fin: bool, length: int,
) -> None:
    mask = b"\x9a\x01\xfe\x42"
    monkeypatch.setattr(websockets.frames.secrets, "token_bytes", lambda n: mask[:n])
    frame = Frame(opcode, bytes(i % 251 for i in range(length)), fin)
    ours = encode_client_frame(frame, mask)
    assert ours == frame.serialize(mask=True)
    # And the server side of websockets reads it back.
    reader = StreamReader()
    reader.feed_data(ours)
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        parsed = done.value
    assert (parsed.opcode, parsed.data, parsed.fin) == (opcode, frame.data, fin)


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def test_send_nowait_writes_at_once_with_a_fresh_mask_a_frame() -> None:
    async with serve(_echo, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None,
                           create_connection=VendorConnection) as ws:
            assert isinstance(ws, VendorConnection)
            assert isinstance(ws.protocol, PooledMaskProtocol)
            written: list[bytes] = []
            write = ws.transport.write
            ws.transport.write = lambda data: (written.append(bytes(data)), write(data))[1]  # type: ignore[method-assign]
            assert ws.send_nowait("hello")
            assert ws.send_nowait(b"\x00\x01")
            assert len(written) == 2  # on the socket before the call returned
            assert written[0][2:6] != written[1][2:6]  # each frame its own mask
            assert [await ws.recv(), await ws.recv()] == ["hello", b"\x00\x01"]
            await ws.send("awaited")  # the library's own send works alongside
            assert await ws.recv() == "awaited"


async def test_send_nowait_says_no_when_paused_or_closed() -> None:
    async with serve(_echo, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None,
                           create_connection=VendorConnection)
        assert isinstance(ws, VendorConnection)
        ws.pause_writing()
        assert not ws.send_nowait(b"x")
        ws.resume_writing()
        assert ws.send_nowait(b"x")
        assert await ws.recv() == b"x"
        server.close()
        await wait_for(lambda: ws.close_code is not None)
        assert not ws.send_nowait(b"late")


async def test_other_client_sockets_keep_the_library_protocol() -> None:
    async with serve(_echo, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            assert type(ws) is ClientConnection
            assert type(ws.protocol) is ClientProtocol
            await ws.send("plain")
            assert await asyncio.wait_for(ws.recv(), 5) == "plain"


async def test_an_awaited_send_still_waits_while_the_socket_pushes_back() -> None:
    async with serve(_echo, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None,
                           create_connection=VendorConnection) as ws:
            await ws.send(b"free")  # room in the buffer: written without waiting
            assert await ws.recv() == b"free"
            ws.pause_writing()
            sending = asyncio.create_task(ws.send(b"held"))
            await asyncio.sleep(0.02)
            assert not sending.done()  # the library's send, waiting for the drain
            ws.resume_writing()
            await sending
            assert await ws.recv() == b"held"


def _record_writes(ws: ClientConnection) -> list[bytes]:
    written: list[bytes] = []
    write = ws.transport.write

    def recording(data: bytes | bytearray | memoryview) -> None:
        written.append(bytes(data))
        write(data)

    ws.transport.write = recording  # type: ignore[method-assign]
    return written


class _FixedMasks(MaskSource):
    """Hands out the same keys in the same order to two sockets."""

    def __init__(self) -> None:
        super().__init__()
        self._keys = itertools.cycle([b"\x01\x02\x03\x04", b"\xa0\xb1\xc2\xd3"])

    def take(self) -> bytes:
        return next(self._keys)


async def test_the_one_step_write_is_the_bytes_the_library_path_writes() -> None:
    """``send_nowait`` on a socket with nothing pending encodes and writes in one step;
    the same messages through ``send_binary``/``send_text`` + ``send_data`` (what it
    does while the protocol holds a queued frame) give the same bytes."""
    messages: list[str | bytes] = ["hello", b"\x00" * 320, "é" * 70, b"\xff" * 70000]
    async with serve(_echo, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        wire: list[list[bytes]] = []
        for library_path in (False, True):
            async with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None,
                               create_connection=VendorConnection) as ws:
                assert isinstance(ws, VendorConnection)
                assert isinstance(ws.protocol, PooledMaskProtocol)
                ws.protocol.masks = _FixedMasks()
                written = _record_writes(ws)
                for message in messages:
                    # the library's path is what a queued control frame or debug asks for
                    ws.protocol.debug = library_path
                    assert ws.send_nowait(message)
                ws.protocol.debug = False
                assert [await ws.recv() for _ in messages] == messages
                wire.append(list(written))  # the close handshake is not ours
    assert len(wire[0]) == len(messages)
    assert [w[:12] for w in wire[0]] == [w[:12] for w in wire[1]]
    assert wire[0] == wire[1]
