"""WS /media under abuse: one stream per call, single-use tokens, per-socket budgets.

Real uvicorn, real WebSockets, Twilio's message shapes. The socket's budgets run on the
edge's clock; tests swap in a manual clock (and a sleep that advances it), so nothing
here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import time as wall

import httpx
import pytest
from support import twilio_stream as tw
from support.calls import Answered, answer_call
from support.server import running_server
from support.twilio_api import fake_twilio_api
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallInfo,
    CallTransport,
    Inbox,
    Line,
    LineEvent,
    MarkPlayed,
)
from callbridge.server.app import create_app
from callbridge.settings import Settings
from callbridge.twilio.tokens import StreamTokens

from .conftest import AUTH_TOKEN
from .test_server_media import Recorder, _open

ClientFor = Callable[[str], httpx.AsyncClient]
MakeSettings = Callable[..., Settings]


class ManualTime:
    """The edge's clock, moved only by the test or by the edge's own (fake) sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def _close_of(ws: ClientConnection) -> tuple[int | None, str]:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    rcvd = closed.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (None, "")


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 5 s")


class Streams:
    """A runner that counts the streams it serves per CallSid, each until hang-up."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.events: dict[str, list[LineEvent]] = {}

    async def __call__(
        self, info: CallInfo, transport: CallTransport, line: Line
    ) -> None:
        self.started.append(info.call_sid)
        queue: Inbox[LineEvent] = Inbox()
        queue.attach(line)
        events = self.events.setdefault(info.stream_sid, [])
        while True:
            event = await queue.get()
            events.append(event)
            if not isinstance(event, (CallerAudio, CallerDtmf, MarkPlayed)):
                return


async def _start(answered: Answered, stream: str | None = None) -> ClientConnection:
    ws = await _open(answered)
    await ws.send(tw.connected())
    await ws.send(tw.start(stream or tw.stream_sid(), answered.call_sid, answered.params))
    return ws


async def test_one_live_stream_per_call_and_each_token_opens_one_stream(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    runner = Streams()
    settings = make_settings()
    assert settings.stream_secret is not None
    secret = settings.stream_secret.get_secret_value()
    app = create_app(settings, runner)
    edge = app.state.edge
    async with running_server(app) as base:
        client = client_for(base)
        answered = await answer_call(client, base, AUTH_TOKEN)
        first_stream = tw.stream_sid()
        first = await _start(answered, first_stream)
        await _until(lambda: runner.started == [answered.call_sid])

        # The same token again, while the first stream is live.
        async with await _start(answered) as replay:
            assert await _close_of(replay) == (1008, "a stream for this call is already live")
        # A fresh token for the same call (a second /voice, seconds later) is refused too.
        later = StreamTokens(secret, now=lambda: wall() + 5).mint(answered.call_sid)
        params = {**answered.params, "token": later}
        again = Answered(answered.call_sid, answered.stream_url, params)
        assert later != answered.params["token"]
        async with await _start(again) as second:
            assert await _close_of(second) == (1008, "a stream for this call is already live")

        await first.send(tw.stop(first_stream, answered.call_sid, seq=2))
        assert (await _close_of(first))[0] == 1000
        await _until(lambda: answered.call_sid not in edge.live_calls)

        # The call has no live stream now, but a used token stays used.
        async with await _start(answered) as late_replay:
            assert await _close_of(late_replay) == (1008, "stream token already used")
        # A token minted for the call and never used opens its stream (Twilio redirects).
        stream = tw.stream_sid()
        async with await _start(again, stream) as renewed:
            await _until(lambda: len(runner.started) == 2)
            await renewed.send(tw.stop(stream, again.call_sid, seq=2))
            assert (await _close_of(renewed))[0] == 1000
    assert runner.started == [answered.call_sid, answered.call_sid]
    assert edge.stats.streams_rejected == 3
    assert edge.stats.calls_total == 2


async def test_a_burst_of_dtmf_reaches_the_runner_within_the_budget(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    runner = Streams()
    app = create_app(make_settings(), runner)
    time = ManualTime()
    edge = app.state.edge
    edge.clock, edge.sleep = time.clock, time.sleep
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with await _start(answered, stream) as ws:
            for i in range(2000):  # what one authenticated socket sent in 0.02 s
                await ws.send(tw.dtmf(stream, "1", seq=i + 2))
            await _until(lambda: edge.stats.frames_rejected["dtmf_rate"] == 1980)
            time.now += 0.5  # half a second later: five more presses are a person's pace
            for i in range(10):
                await ws.send(tw.dtmf(stream, "2", seq=2100 + i))
            await ws.send(tw.stop(stream, answered.call_sid, seq=3000))
            await _close_of(ws)
    pressed = [e.digit for e in runner.events[stream] if isinstance(e, CallerDtmf)]
    assert pressed == ["1"] * 20 + ["2"] * 5
    assert edge.stats.frames_rejected["dtmf_rate"] == 1985


async def test_only_echoes_of_marks_we_sent_reach_the_runner(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    async def send_mark(transport: CallTransport) -> None:
        await transport.send_mark("seg-1")

    runner = Recorder(on_audio=send_mark)
    app = create_app(make_settings(), runner)
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with await _start(answered, stream) as ws:
            await ws.send(tw.mark(stream, "seg-1", seq=2))  # before we sent it: not ours
            await ws.send(tw.media(stream, b"\xff" * 160, seq=3, chunk=1, timestamp_ms=0))
            assert "seg-1" in str(await ws.recv())
            for i in range(500):
                await ws.send(tw.mark(stream, "seg-1" if i == 0 else f"x{i}", seq=4 + i))
            await ws.send(tw.stop(stream, answered.call_sid, seq=600))
            await _close_of(ws)
        await asyncio.wait_for(runner.done.wait(), 10)
    assert [e for e in runner.events if isinstance(e, MarkPlayed)] == [MarkPlayed("seg-1")]
    assert app.state.edge.stats.frames_rejected["mark_unsent"] == 500


async def test_audio_faster_than_real_time_is_read_at_real_time_and_none_is_lost(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    runner = Streams()
    app = create_app(make_settings(), runner)
    time = ManualTime()
    edge = app.state.edge
    edge.clock, edge.sleep = time.clock, time.sleep
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        stream = tw.stream_sid()
        async with await _start(answered, stream) as ws:
            for i in range(500):  # 10 s of audio sent at once (the clock does not move)
                frame = tw.media(stream, b"\x7f" * 160, seq=i + 2, chunk=i + 1, timestamp_ms=i * 20)
                await ws.send(frame)
            await ws.send(tw.stop(stream, answered.call_sid, seq=600))
            await _close_of(ws)
    audio = [e for e in runner.events[stream] if isinstance(e, CallerAudio)]
    assert [e.timestamp_ms for e in audio] == [i * 20 for i in range(500)]
    # The first 2 s (the allowance for a burst after a stall) pass at once; each later
    # frame waits for its 20 ms, so the reader ends 10 s after the start, as in real time.
    assert len(time.slept) == 400
    assert sum(time.slept) == pytest.approx(8.0)


async def test_sockets_that_never_send_start_are_capped(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    app = create_app(make_settings(), Streams())
    edge = app.state.edge
    edge.max_unstarted = 2
    async with running_server(app) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
        idle = [await _open(answered), await _open(answered)]
        await _until(lambda: edge.unstarted == 2)
        with pytest.raises(InvalidStatus) as refused:
            await _open(answered)
        assert refused.value.response.status_code == 403
        await idle[0].close()
        await _until(lambda: edge.unstarted == 1)
        stream = tw.stream_sid()
        async with await _start(answered, stream) as ws:  # room again: Twilio gets in
            await _until(lambda: edge.stats.active_calls == 1)
            assert edge.unstarted == 1
            await ws.send(tw.stop(stream, answered.call_sid, seq=2))
            assert (await _close_of(ws))[0] == 1000
        await idle[1].close()
        await _until(lambda: edge.unstarted == 0)
    assert edge.stats.streams_rejected == 1


async def test_max_calls_holds_at_media_when_many_calls_were_answered_at_once(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    runner = Streams()
    with fake_twilio_api(tw.ACCOUNT_SID, AUTH_TOKEN) as api:
        app = create_app(make_settings(max_calls=1, twilio_api_base_url=api.base_url), runner)
        edge = app.state.edge
        async with running_server(app) as base:
            client = client_for(base)
            # Both answered before either stream starts: /voice lets both through.
            one = await answer_call(client, base, AUTH_TOKEN)
            two = await answer_call(client, base, AUTH_TOKEN)
            api.add_call(two.call_sid)
            stream = tw.stream_sid()
            async with await _start(one, stream) as first:
                await _until(lambda: edge.stats.active_calls == 1)
                async with await _start(two) as second:
                    assert await _close_of(second) == (1013, "at capacity")
                await first.send(tw.stop(stream, one.call_sid, seq=2))
                await _close_of(first)
    assert runner.started == [one.call_sid]
    assert edge.stats.overflow_total == 1
    # The refused caller heard the polite refusal, not a dead line.
    [update] = api.requests
    assert two.call_sid in update.path
    assert "Sorry, we cannot take your call right now" in update.form["Twiml"][0]
    assert "<Hangup" in update.form["Twiml"][0]


def test_max_calls_has_a_safe_default(make_settings: MakeSettings) -> None:
    assert make_settings().max_calls == 30
    assert make_settings(max_calls=0).max_calls == 0  # 0 still means no limit
