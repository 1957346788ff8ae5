"""WS /media over a real WebSocket against a real uvicorn, with Twilio's message shapes."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from support import twilio_stream as tw
from support.calls import Answered, answer_call
from support.server import running_server
from support.twilio_api import fake_twilio_api
from support.twilio_sign import sign_url
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    CallInfo,
    CallTransport,
    Inbox,
    Line,
    LineEvent,
    MarkPlayed,
)
from callbridge.server.app import create_app
from callbridge.server.loopback import FRAMES_PER_MARK
from callbridge.settings import Settings
from callbridge.twilio.tokens import StreamTokens

from .conftest import AUTH_TOKEN

ClientFor = Callable[[str], httpx.AsyncClient]
MakeSettings = Callable[..., Settings]


class Recorder:
    """A CallRunner that writes down what the line told it and can talk back."""

    def __init__(self, on_audio: Callable[[CallTransport], Any] | None = None, fail: bool = False):
        self.info: CallInfo | None = None
        self.events: list[LineEvent] = []
        self.done = asyncio.Event()
        self.on_audio = on_audio
        self.fail = fail

    async def __call__(
        self, info: CallInfo, transport: CallTransport, line: Line
    ) -> None:
        self.info = info
        queue: Inbox[LineEvent] = Inbox()
        queue.attach(line)
        try:
            while True:
                event = await queue.get()
                self.events.append(event)
                if isinstance(event, CallerAudio) and self.on_audio is not None:
                    action, self.on_audio = self.on_audio, None
                    await action(transport)
                if self.fail:
                    raise RuntimeError("runner bug")
                if isinstance(event, CallerHungUp):
                    return
        finally:
            self.done.set()


async def _open(answered: Answered, *, signature: str | None = "valid") -> ClientConnection:
    headers = {}
    if signature == "valid":
        headers["X-Twilio-Signature"] = sign_url(AUTH_TOKEN, answered.stream_url)
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    return await connect(answered.stream_url, additional_headers=headers)


async def _recv_json(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(10):
        return json.loads(await ws.recv())  # type: ignore[no-any-return]


async def _closed_with(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    rcvd = closed.value.rcvd
    return rcvd.code if rcvd else None


def _frame(i: int) -> bytes:
    return bytes([(i * 7 + k) % 256 for k in range(160)])


async def test_loopback_call_end_to_end(make_settings: MakeSettings, client_for: ClientFor) -> None:
    app = create_app(make_settings())
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with await _open(answered) as ws:
            # The server must not negotiate permessage-deflate, though the client offers it.
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send(tw.connected())
            await ws.send(tw.start(stream, answered.call_sid, answered.params))
            n = FRAMES_PER_MARK + 5
            for i in range(n):
                await ws.send(
                    tw.media(stream, _frame(i), seq=i + 2, chunk=i + 1, timestamp_ms=i * 20)
                )
            echoed: list[bytes] = []
            marks: list[tuple[int, str]] = []
            while len(echoed) < n:
                msg = await _recv_json(ws)
                assert msg["streamSid"] == stream
                if msg["event"] == "media":
                    echoed.append(base64.b64decode(msg["media"]["payload"]))
                elif msg["event"] == "mark":
                    marks.append((len(echoed), msg["mark"]["name"]))
            assert echoed == [_frame(i) for i in range(n)]
            assert marks == [(FRAMES_PER_MARK, "loopback-1")]
            assert app.state.edge.stats.active_calls == 1
            await ws.send(tw.dtmf(stream, "5", seq=n + 2))
            assert (await _recv_json(ws)) == {"event": "clear", "streamSid": stream}
            await ws.send(tw.stop(stream, answered.call_sid, seq=n + 3))
            assert await _closed_with(ws) == 1000
        stats = app.state.edge.stats
        for _ in range(100):  # the handler finishes its bookkeeping just after closing
            if stats.active_calls == 0:
                break
            await asyncio.sleep(0.01)
        assert (stats.active_calls, stats.calls_total, sum(stats.frames_rejected.values())) == (
            0,
            1,
            0,
        )


async def test_line_events_reach_the_runner_and_its_replies_reach_twilio(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    async def reply(transport: CallTransport) -> None:
        await transport.send_audio(b"\x01\x02\x03")
        await transport.send_mark("seg-1")
        await transport.send_clear()

    runner = Recorder(on_audio=reply)
    async with running_server(create_app(make_settings(), runner)) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with await _open(answered) as ws:
            await ws.send(tw.connected())
            await ws.send(tw.start(stream, answered.call_sid, answered.params))
            await ws.send(tw.media(stream, b"\xff" * 160, seq=2, chunk=1, timestamp_ms=0))
            out = [await _recv_json(ws) for _ in range(3)]
            assert out == [
                {"event": "media", "streamSid": stream, "media": {"payload": "AQID"}},
                {"event": "mark", "streamSid": stream, "mark": {"name": "seg-1"}},
                {"event": "clear", "streamSid": stream},
            ]
            await ws.send(tw.dtmf(stream, "#", seq=3))
            await ws.send(tw.mark(stream, "seg-1", seq=4))
            await ws.send(tw.media(stream, b"\x7f" * 160, seq=5, chunk=2, timestamp_ms=20))
            await ws.send(tw.stop(stream, answered.call_sid, seq=6))
            await _closed_with(ws)
        await asyncio.wait_for(runner.done.wait(), 10)
    assert runner.events == [
        CallerAudio(b"\xff" * 160, 0),
        CallerDtmf("#"),
        MarkPlayed("seg-1"),
        CallerAudio(b"\x7f" * 160, 20),
        CallerHungUp("stop"),
    ]
    assert runner.info is not None
    assert (runner.info.call_sid, runner.info.stream_sid) == (answered.call_sid, stream)
    assert (runner.info.from_number, runner.info.to_number) == ("+15550001111", "+15550002222")
    assert "token" not in runner.info.parameters  # the runner never sees the credential


def _start_with(answered: Answered, stream: str, secret: str, case: str) -> str:
    params = dict(answered.params)
    call = answered.call_sid
    if case == "no-token":
        del params["token"]
    elif case == "garbage-token":
        params["token"] = "v1.1.x.y"
    elif case == "other-call-token":
        params["token"] = StreamTokens(secret).mint(tw.call_sid())
    elif case == "expired-token":
        params["token"] = StreamTokens(secret, now=lambda: time.time() - 3600).mint(call)
    fmt: dict[str, Any] = {}
    if case == "wrong-encoding":
        fmt = {"encoding": "audio/l16"}
    elif case == "wrong-rate":
        fmt = {"rate": 16000}
    elif case == "stereo":
        fmt = {"channels": 2}
    return tw.start(stream, call, params, **fmt)


@pytest.mark.parametrize(
    "case",
    [
        "no-token",
        "garbage-token",
        "other-call-token",
        "expired-token",
        "wrong-encoding",
        "wrong-rate",
        "stereo",
        "media-before-start",
    ],
)
async def test_bad_start_closes_1008_before_the_runner_runs(
    make_settings: MakeSettings, client_for: ClientFor, case: str
) -> None:
    settings = make_settings()
    assert settings.stream_secret is not None
    runner = Recorder()
    app = create_app(settings, runner)
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with await _open(answered) as ws:
            await ws.send(tw.connected())
            if case == "media-before-start":
                await ws.send(tw.media(stream, b"\xff" * 160, seq=1, chunk=1, timestamp_ms=0))
            else:
                await ws.send(
                    _start_with(answered, stream, settings.stream_secret.get_secret_value(), case)
                )
            assert await _closed_with(ws) == 1008
    assert runner.info is None
    assert app.state.edge.stats.streams_rejected == 1
    assert app.state.edge.stats.calls_total == 0


async def test_bad_handshake_signature_is_refused(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    app = create_app(make_settings())
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        with pytest.raises(InvalidStatus) as err:
            await _open(answered, signature=sign_url("x" * 32, answered.stream_url))
        assert err.value.response.status_code == 403
        # No header at all is allowed (the token still guards the stream).
        async with await _open(answered, signature=None) as ws:
            await ws.send(tw.start(tw.stream_sid(), answered.call_sid, answered.params))
            await ws.send(tw.stop("MZ1", answered.call_sid, seq=2))
            assert await _closed_with(ws) == 1000
    assert app.state.edge.stats.streams_rejected == 1


async def test_malformed_frames_are_counted_and_the_call_goes_on(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    app = create_app(make_settings())
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with await _open(answered) as ws:
            await ws.send(tw.start(stream, answered.call_sid, answered.params))
            bad: list[str | bytes] = [
                "{not json",
                '{"event": "hello"}',
                '{"event":"media","streamSid":"MZ1","media":{"timestamp":"0","payload":"%%%"}}',
                '{"event":"media","streamSid":"MZ1","media":{"timestamp":[],"payload":""}}',
                '{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":5}}',
                "[]",
                '{"event":"media","media":{"payload":"' + "A" * 70_000 + '"}}',
                b"\x00\x01binary",
                tw.start(stream, answered.call_sid, answered.params),
            ]
            for frame in bad:
                await ws.send(frame)
            await ws.send(tw.media(stream, _frame(1), seq=3, chunk=1, timestamp_ms=0))
            msg = await _recv_json(ws)
            assert base64.b64decode(msg["media"]["payload"]) == _frame(1)
            # 380 ms of the caller's audio missing at the source: one timestamp gap.
            await ws.send(tw.media(stream, _frame(2), seq=4, chunk=2, timestamp_ms=400))
            msg = await _recv_json(ws)
            assert base64.b64decode(msg["media"]["payload"]) == _frame(2)
            await ws.send(tw.stop(stream, answered.call_sid, seq=5))
            await _closed_with(ws)
        for _ in range(100):  # the handler adds its call's counts just after closing
            if app.state.edge.stats.active_calls == 0:
                break
            await asyncio.sleep(0.01)
    assert app.state.edge.stats.timestamp_gaps == 1
    assert dict(app.state.edge.stats.frames_rejected) == {
        "json": 1,
        "unknown": 1,
        "base64": 1,
        "type": 3,
        "size": 1,
        "binary": 1,
        "order": 1,
    }


async def test_runner_hangup_ends_the_call_through_rest(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    async def hang_up(transport: CallTransport) -> None:
        await transport.hangup()

    runner = Recorder(on_audio=hang_up)
    with fake_twilio_api(tw.ACCOUNT_SID, AUTH_TOKEN) as api:
        settings = make_settings(twilio_api_base_url=api.base_url)
        async with running_server(create_app(settings, runner)) as base:
            answered = await answer_call(client_for(base), base, AUTH_TOKEN)
            api.add_call(answered.call_sid)
            stream = tw.stream_sid()
            async with await _open(answered) as ws:
                await ws.send(tw.start(stream, answered.call_sid, answered.params))
                await ws.send(tw.media(stream, b"\xff" * 160, seq=2, chunk=1, timestamp_ms=0))
                assert await _closed_with(ws) == 1000
    assert api.calls[answered.call_sid] == "completed"
    assert [r.form for r in api.requests] == [{"Status": ["completed"]}]


async def test_caller_vanishing_and_runner_crash_are_contained(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    gone = Recorder()
    app = create_app(make_settings(), gone)
    async with running_server(app) as base:
        client = client_for(base)
        answered = await answer_call(client, base, AUTH_TOKEN)
        async with await _open(answered) as ws:
            await ws.send(tw.start(tw.stream_sid(), answered.call_sid, answered.params))
            await ws.send(tw.media("MZ1", b"\xff" * 160, seq=2, chunk=1, timestamp_ms=0))
        # The client closed without "stop": the runner still hears that the caller left.
        await asyncio.wait_for(gone.done.wait(), 10)
        assert gone.events[-1] == CallerHungUp("disconnect")

        crashing = Recorder(fail=True)
        app.state.edge.runner = crashing
        answered = await answer_call(client, base, AUTH_TOKEN)
        async with await _open(answered) as ws:
            await ws.send(tw.start(tw.stream_sid(), answered.call_sid, answered.params))
            await ws.send(tw.media("MZ1", b"\xff" * 160, seq=2, chunk=1, timestamp_ms=0))
            assert await _closed_with(ws) == 1011
        health = await client.get("/healthz")
        assert health.status_code == 200


async def test_a_socket_that_never_starts_is_closed(
    make_settings: MakeSettings, client_for: ClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callbridge.server import media

    monkeypatch.setattr(media, "START_TIMEOUT_S", 0.2)
    app = create_app(make_settings())
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        async with await _open(answered) as ws:
            await ws.send(tw.connected())
            await ws.send(tw.mark("MZ1", "early", seq=1))  # not allowed before start: counted
            assert await _closed_with(ws) == 1008
    assert app.state.edge.stats.frames_rejected["order"] == 1
    assert app.state.edge.stats.streams_rejected == 1
