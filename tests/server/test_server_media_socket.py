"""The ``/media`` socket outside ASGI: its own edges (routing at the upgrade, malformed
upgrades, back-pressure, the backlog cap). Real uvicorn, real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import WebSocket
from support import twilio_stream as tw
from support.calls import answer_call
from support.server import running_server, ws_url
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from callbridge.engine.transport import (
    CallerAudio,
    CallerHungUp,
    CallInfo,
    CallTransport,
    Inbox,
    Line,
)
from callbridge.server import media
from callbridge.server.app import create_app
from callbridge.settings import Settings

from .conftest import AUTH_TOKEN
from .test_server_media import _closed_with, _open
from .test_server_media_limits import ManualTime, _until

ClientFor = Callable[[str], httpx.AsyncClient]
MakeSettings = Callable[..., Settings]


async def _raw_request(base: str, request: bytes) -> bytes:
    """Send ``request`` on a fresh TCP connection; everything the server says back."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()  # until the server closes
    finally:
        writer.close()


async def test_other_websocket_paths_still_reach_the_app(make_settings: MakeSettings) -> None:
    app = create_app(make_settings())

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("echo " + await websocket.receive_text())
        await websocket.close()

    async with running_server(app) as base:
        async with connect(ws_url(base, "/echo")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo hi"
        # A path the app does not serve gets the app's own refusal, not ours.
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(base, "/nowhere"))
        assert refused.value.response.status_code == 403
    assert app.state.edge.stats.streams_rejected == 0
    assert app.state.edge.unstarted == 0


async def test_a_malformed_upgrade_gets_a_clear_http_error(make_settings: MakeSettings) -> None:
    app = create_app(make_settings())
    async with running_server(app) as base:
        host = base.removeprefix("http://")
        no_key = (
            f"GET /media HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        answer = await _raw_request(base, no_key)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ")
        assert b"Sec-WebSocket-Key" in body

        old_version = no_key.replace(
            b"Sec-WebSocket-Version: 13",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8",
        )
        answer = await _raw_request(base, old_version)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"invalid Sec-WebSocket-Version header: 8" in answer
        # The server is unharmed: a plain request still works.
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            assert (await client.get("/healthz")).status_code == 200
    assert app.state.edge.unstarted == 0
    assert app.state.edge.stats.calls_total == 0


class Flood:
    """A runner that sends 1 s of audio per message as fast as the socket takes it."""

    def __init__(self) -> None:
        self.sent = 0
        self.done = asyncio.Event()

    async def __call__(self, info: CallInfo, transport: CallTransport, line: Line) -> None:
        try:
            while not getattr(transport, "closed", False):
                await transport.send_audio(b"\x7f" * 8000)
                self.sent += 1
        finally:
            self.done.set()


async def test_a_peer_that_stops_reading_holds_up_its_own_call_only(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    flood = Flood()
    app = create_app(make_settings(), flood)
    edge = app.state.edge
    async with running_server(app) as base:
        client = client_for(base)
        answered = await answer_call(client, base, AUTH_TOKEN)
        stream = tw.stream_sid()
        # The client never reads; with max_queue=1 its library stops reading from TCP
        # after one message, so the kernel buffers fill and then ours would grow.
        ws = await connect(answered.stream_url, max_queue=1)
        await ws.send(tw.start(stream, answered.call_sid, answered.params))
        # Once the buffers are full the runner's send waits: the count stops growing.
        last, still = -1, 0
        async with asyncio.timeout(20):
            while still < 10:
                await asyncio.sleep(0.05)
                still = still + 1 if flood.sent == last else 0
                last = flood.sent
        assert flood.sent > 0
        # Bounded by the kernel's socket buffers plus our transport's high-water mark
        # (64 KiB), not by how long the peer stalls: ~10.7 KB a message.
        assert flood.sent * 10_700 < 64 * 1024 * 1024
        # The server is still responsive, and other calls are unaffected.
        assert (await client.get("/healthz")).status_code == 200
        # The stuck peer vanishes: the waiting send gives up and the call ends.
        ws.transport.abort()
        await asyncio.wait_for(flood.done.wait(), 10)
        await _until(lambda: edge.stats.active_calls == 0)
    assert edge.stats.calls_total == 1


class Sluggish:
    """A runner whose queue holds its own events too (as the engine's TTS audio and
    transcripts do), and which reads nothing until told to."""

    def __init__(self, own_events: int) -> None:
        self.own_events = own_events
        self.audio = 0
        self.queue: Inbox[Any] | None = None
        self.go = asyncio.Event()
        self.done = asyncio.Event()

    async def __call__(self, info: CallInfo, transport: CallTransport, line: Line) -> None:
        inbox: Inbox[Any] = Inbox()
        for i in range(self.own_events):  # the engine's own events share the inbox
            inbox.put_nowait(("tts-audio", i))
        inbox.attach(line)
        self.queue = inbox
        await self.go.wait()
        try:
            while True:
                event = await inbox.get()
                if isinstance(event, CallerAudio):
                    self.audio += 1
                elif isinstance(event, CallerHungUp):
                    return
        finally:
            self.done.set()


@pytest.mark.parametrize(("own_events", "frames", "delivered"), [(1500, 50, 50), (0, 1005, 1000)])
async def test_the_backlog_cap_counts_only_the_callers_audio(
    make_settings: MakeSettings,
    client_for: ClientFor,
    own_events: int,
    frames: int,
    delivered: int,
) -> None:
    runner = Sluggish(own_events)
    app = create_app(make_settings(), runner)
    edge = app.state.edge
    time = ManualTime()
    edge.clock, edge.sleep = time.clock, time.sleep
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with await _open(answered) as ws:
            await ws.send(tw.start(stream, answered.call_sid, answered.params))
            await _until(lambda: runner.queue is not None)  # its own events are queued
            for i in range(frames):
                chunk = tw.media(stream, b"\x7f" * 160, seq=i + 2, chunk=i + 1, timestamp_ms=i * 20)
                await ws.send(chunk)
            await ws.send(tw.stop(stream, answered.call_sid, seq=frames + 2))
            queued = own_events + delivered + 1  # and the hang-up
            await _until(lambda: runner.queue is not None and runner.queue.qsize() == queued)
            runner.go.set()
            assert await _closed_with(ws) == 1000
        await asyncio.wait_for(runner.done.wait(), 10)
    assert runner.audio == delivered
    assert media.MAX_QUEUED_EVENTS == 1000


async def test_a_server_shutdown_closes_live_streams_1012(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    runner = Sluggish(0)
    runner.go.set()
    app = create_app(make_settings(), runner)
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        ws = await _open(answered)
        await ws.send(tw.start(tw.stream_sid(), answered.call_sid, answered.params))
        await _until(lambda: app.state.edge.stats.active_calls == 1)
    # uvicorn stopped (no drain here): the caller hears "restarting", the runner a hang-up.
    assert await _closed_with(ws) == 1012
    await asyncio.wait_for(runner.done.wait(), 10)
    assert app.state.edge.stats.active_calls == 0


async def test_a_peer_that_answers_no_ping_is_hung_up(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    runner = Sluggish(0)
    runner.go.set()
    app = create_app(make_settings(), runner)
    async with running_server(app, ws_ping_interval=0.1, ws_ping_timeout=0.2) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        reader, writer = await raw_media_socket(base)
        start = tw.start(tw.stream_sid(), answered.call_sid, answered.params).encode()
        header = bytes([0x81, 0x80 | 126]) + len(start).to_bytes(2, "big")
        writer.write(header + b"\0\0\0\0" + start)  # masked (with a zero key), as clients must
        # We never answer the server's pings: it gives up and the call ends.
        async with asyncio.timeout(10):
            rest = await reader.read()  # until the server closes the connection
        writer.close()
        assert b"keepalive ping timeout" in rest
        await asyncio.wait_for(runner.done.wait(), 10)
        await _until(lambda: app.state.edge.stats.active_calls == 0)
    assert app.state.edge.stats.calls_total == 1


def _client_frame(first: int, payload: bytes, key: bytes = b"\x9d\x21\x07\xe3") -> bytes:
    """A masked client frame (a real mask key: the bytes on the wire are not the text)."""
    n = len(payload)
    head = bytes([first, 0x80 | n]) if n < 126 else bytes([first, 0xFE]) + n.to_bytes(2, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Collect:
    """A runner that keeps the caller's audio and how the call ended."""

    def __init__(self) -> None:
        self.audio: list[bytes] = []
        self.ended: str | None = None
        self.done = asyncio.Event()

    async def __call__(self, info: CallInfo, transport: CallTransport, line: Line) -> None:
        inbox: Inbox[Any] = Inbox()
        inbox.attach(line)
        try:
            while True:
                event = await inbox.get()
                if isinstance(event, CallerAudio):
                    self.audio.append(event.ulaw)
                elif isinstance(event, CallerHungUp):
                    self.ended = event.reason
                    return
        finally:
            self.done.set()


async def test_frames_cut_and_joined_anyhow_then_a_ping_then_a_malformed_frame(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    """The media frames read by hand and the rest by websockets, over a real socket:
    every frame's audio arrives however TCP cuts them, a ping mid-stream is answered,
    and a malformed frame mid-stream is websockets' protocol error (1002)."""
    runner = Collect()
    app = create_app(make_settings(), runner)
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        reader, writer = await raw_media_socket(base)
        stream = tw.stream_sid()
        audio = [bytes([i]) * 160 for i in range(12)]
        frames = [
            _client_frame(0x81, tw.start(stream, answered.call_sid, answered.params).encode())
        ]
        frames += [
            _client_frame(
                0x81,
                tw.media(
                    stream, a, seq=i + 2, chunk=i + 1, timestamp_ms=i * 20, compact=i % 3 > 0
                ).encode(),
            )
            for i, a in enumerate(audio)
        ]
        ping = _client_frame(0x89, b"are you there")
        blob = b"".join(frames[:7]) + ping + b"".join(frames[7:])
        pos = 0
        for size in [1, 2, 5, 300, 3, 700, 1, 40, 1000, 4]:  # then the rest at once
            writer.write(blob[pos : pos + size])
            await writer.drain()
            await asyncio.sleep(0.005)  # separate reads, as far as TCP lets us
            pos += size
        writer.write(blob[pos:])
        pong = b"\x8a\x0d" + b"are you there"
        async with asyncio.timeout(10):
            assert await reader.readexactly(len(pong)) == pong
        await _until(lambda: len(runner.audio) == len(audio))
        assert runner.audio == audio

        writer.write(_client_frame(0xC1, b"compressed?"))  # a reserved bit: no extensions here
        async with asyncio.timeout(10):
            rest = await reader.read()  # until the server closes the connection
        writer.close()
        reason = b"reserved bits must be 0"
        assert rest == bytes([0x88, 2 + len(reason)]) + (1002).to_bytes(2, "big") + reason
        await asyncio.wait_for(runner.done.wait(), 10)
    assert runner.ended == "disconnect"
    assert runner.audio == audio


@pytest.mark.parametrize("compact", [True, False])
async def test_twilios_shape_and_any_other_spacing_make_the_same_call(
    make_settings: MakeSettings, client_for: ClientFor, compact: bool
) -> None:
    """Twilio's own shape takes the live fast path, any other spacing the strict reader:
    the same audio and timestamps, the same gap, the same count of a bad payload."""
    runner = Collect()
    app = create_app(make_settings(), runner)
    edge = app.state.edge
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with await _open(answered) as ws:
            await ws.send(tw.start(stream, answered.call_sid, answered.params))
            for i, ts in enumerate([0, 20, 40, 300, 320]):  # 260 ms missing at the source
                await ws.send(
                    tw.media(
                        stream,
                        bytes([i]) * 160,
                        seq=i + 2,
                        chunk=i + 1,
                        timestamp_ms=ts,
                        compact=compact,
                    )
                )
            bad = tw.media(stream, b"x", seq=9, chunk=9, timestamp_ms=340, compact=compact)
            await ws.send(bad.replace('"eA=="', '"eA="'))  # not base64: counted, not heard
            await ws.send(tw.stop(stream, answered.call_sid, seq=10))
            assert await _closed_with(ws) == 1000
        await asyncio.wait_for(runner.done.wait(), 10)
        await _until(lambda: edge.stats.active_calls == 0)
    assert runner.audio == [bytes([i]) * 160 for i in range(5)]
    assert runner.ended == "stop"
    assert edge.stats.timestamp_gaps == 1
    assert dict(edge.stats.frames_rejected) == {"base64": 1}


async def raw_media_socket(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP socket upgraded to ``/media`` by hand: the test writes its own frames."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            f"GET /media HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
    return reader, writer


async def test_bot_audio_of_any_length_marks_and_clear_reach_twilio_in_order(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    """What the playout sends (40 ms messages, a lone 20 ms one before a mark, a clear
    and the next reply) reaches Twilio in order and byte for byte, through the Twilio
    transport and the socket's at-once writes."""
    from .test_server_media import Recorder, _recv_json

    first, odd, after = bytes(range(64)) + bytes(range(256)), b"\x05" * 160, b"\x06" * 320

    async def reply(transport: CallTransport) -> None:
        await transport.send_audio(first)
        await transport.send_audio(odd)
        await transport.send_mark("m1-r1s0")
        await transport.send_clear()
        await transport.send_audio(after)

    runner = Recorder(on_audio=reply)
    async with running_server(create_app(make_settings(), runner)) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with await _open(answered) as ws:
            await ws.send(tw.start(stream, answered.call_sid, answered.params))
            await ws.send(tw.media(stream, b"\xff" * 160, seq=2, chunk=1, timestamp_ms=0))
            out = [await _recv_json(ws) for _ in range(5)]
            await ws.send(tw.stop(stream, answered.call_sid, seq=3))
            await _closed_with(ws)
        await asyncio.wait_for(runner.done.wait(), 10)
    assert [m["event"] for m in out] == ["media", "media", "mark", "clear", "media"]
    audio = [base64.b64decode(m["media"]["payload"]) for m in out if m["event"] == "media"]
    assert audio == [first, odd, after]
    assert out[2]["mark"] == {"name": "m1-r1s0"}
