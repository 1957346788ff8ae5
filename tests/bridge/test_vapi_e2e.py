"""Bridge mode end to end: the real server (uvicorn, signed webhook, /media) running the
runner ``serve`` builds from examples/assistant-vapi.yaml, against the fake VAPI, driven
by the simulator speaking Twilio's Media Streams protocol in real time; hang-ups go
through the fake Twilio REST API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakes.vapi import GREETING_TONE, FakeVapi
from support.server import running_server
from support.twilio_api import FakeTwilioApi, fake_twilio_api

from callbridge.audio import levels
from callbridge.call_events import CallEvent
from callbridge.engine.runner import CallStats
from callbridge.engine.transport import CallInfo
from callbridge.server.app import create_app
from callbridge.settings import load_settings
from callbridge.simulator import voice
from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions, dial
from callbridge.simulator.wire import new_sid
from callbridge.voice_agent import build_runner

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "assistant-vapi.yaml"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32
KEY = "test-vapi-key"
_TONE_3S = GREETING_TONE * 3


@dataclass
class Heard:
    """Every bot frame the caller received, with when, and whether it was the greeting."""

    frames: list[tuple[float, bool]] = field(default_factory=list)

    def classify(self, audio: bytes) -> bool:
        self.frames.append((time.monotonic(), audio in _TONE_3S))
        return voice.is_audible(audio)

    def greeting_after(self, t: float) -> int:
        return sum(1 for at, greeting in self.frames if greeting and at > t)


@dataclass
class Bridge:
    vapi: FakeVapi
    twilio: FakeTwilioApi
    base_url: str
    ended: list[tuple[CallInfo, CallStats]]
    call_over: asyncio.Event
    events: list[tuple[str, CallEvent]] = field(default_factory=list)  # (CallSid, event)

    def options(self, call_sid: str) -> CallOptions:
        self.twilio.add_call(call_sid)
        return CallOptions(self.base_url, AUTH_TOKEN, account_sid=ACCOUNT_SID, call_sid=call_sid)


@pytest.fixture
def twilio() -> Iterator[FakeTwilioApi]:
    with fake_twilio_api(ACCOUNT_SID, AUTH_TOKEN) as api:
        yield api


@asynccontextmanager
async def bridge(tmp_path: Path, twilio: FakeTwilioApi, **fake: object) -> AsyncIterator[Bridge]:
    fake.setdefault("api_key", KEY)
    async with FakeVapi(**fake) as vapi:  # type: ignore[arg-type]
        ended: list[tuple[CallInfo, CallStats]] = []
        call_over = asyncio.Event()

        def on_end(info: CallInfo, stats: CallStats) -> None:
            ended.append((info, stats))
            call_over.set()

        events: list[tuple[str, CallEvent]] = []
        env = {"VAPI_API_KEY": KEY, "VAPI_BASE_URL": vapi.base_url}
        runner = build_runner(EXAMPLE, env, on_end=on_end)
        settings = load_settings(
            auth_token=AUTH_TOKEN, stream_secret="s" * 32, data_dir=tmp_path,
            account_sid=ACCOUNT_SID, twilio_api_base_url=twilio.base_url,
        )
        app = create_app(settings, runner)
        # The bridge's record events reach the call's emit, like every subscriber's.
        app.state.edge.events.subscribe(lambda sid, event: events.append((sid, event)))
        async with running_server(app) as base_url:
            yield Bridge(vapi, twilio, base_url, ended, call_over, events)


@pytest.fixture(scope="module")
def question() -> voice.Utterance:
    return voice.from_text("Hello, I would like to check my bill please.")


def completed(twilio: FakeTwilioApi, call_sid: str) -> int:
    """How many REST requests ended this call at Twilio."""
    return sum(
        call_sid in r.path and r.form.get("Status") == ["completed"] for r in twilio.requests
    )


async def test_audio_both_ways_barge_in_clears_and_caller_hangup_ends_vapi(
    tmp_path: Path, twilio: FakeTwilioApi, question: voice.Utterance
) -> None:
    async with bridge(tmp_path, twilio, greeting_ms=3000) as b:
        heard = Heard()
        options = b.options(new_sid("CA"))
        call = LiveCall(await dial(options), options, record=True, classify=heard.classify)
        async with call:
            # The greeting flows VAPI → bridge → Twilio, paced, while caller audio flows up.
            assert await call.wait_until(lambda: call.playback.reply_played_ms >= 500, 10)
            vapi_call = b.vapi.calls[0]
            assert vapi_call.caller_frames > 0
            # The caller talks over it: VAPI reports it, the line gets `clear`.
            await call.say(question)
            assert call.clear_times, "no clear reached the caller"
            assert heard.greeting_after(call.clear_times[0]) == 0  # nothing stale after it
            assert vapi_call.interruptions == 1
            # VAPI answers (the fake echoes the question): the caller hears it, bit-exact.
            assert await call.wait_until(lambda: vapi_call.utterances >= 1, 5)
            assert await call.wait_until(lambda: call.marks_echoed_played >= 1, 10)
        report = call.report()
        assert report.hangup_by == "caller" and not report.protocol_errors
        (turn,) = report.turns
        assert turn.barge_in and turn.bargein_ms is not None
        assert call.recorder is not None and question.onset_index is not None
        spoken = b"".join(question.frames[question.onset_index + 5 : question.onset_index + 30])
        assert spoken in call.recorder.bot_ulaw()
        # The caller's hang-up ends the VAPI call; Twilio's side needed no REST call.
        async with asyncio.timeout(5):
            await vapi_call.closed.wait()
        assert vapi_call.controls == [{"type": "hangup"}]
        assert vapi_call.ended_reason == "customer-ended-call"
        assert completed(b.twilio, options.call_sid) == 0
        # The call record hears how it went, once the runner has wound down.
        await asyncio.wait_for(b.call_over.wait(), 5)
        (info, stats), = b.ended
        assert info.call_sid == options.call_sid and stats.barge_ins == 1


async def test_vapi_ending_the_call_hangs_up_twilio_after_the_goodbye(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    async with bridge(tmp_path, twilio, greeting_ms=400) as b:
        rest_at: list[float] = []
        b.twilio.before_answer = lambda: rest_at.append(time.monotonic())
        options = b.options(new_sid("CA"))
        async with LiveCall(await dial(options), options, record=True) as call:
            assert await call.wait_until(lambda: call.marks_echoed_played >= 1, 10)
            b.vapi.end_call()
            assert await call.wait_until(lambda: call.ended, 10)
        assert call.report().hangup_by == "server"
        assert completed(b.twilio, options.call_sid) == 1
        # The whole 600 ms goodbye played before the REST hang-up went out.
        goodbye = levels.tone(330, 600, -12)
        assert call.recorder is not None and len(call.recorder.bot_ulaw()) >= len(goodbye) // 2
        assert call.last_audible_end_s is not None
        assert rest_at and rest_at[0] >= call.last_audible_end_s
        assert b.vapi.calls[0].controls == []  # VAPI ended it; nothing to tell it


async def test_unreachable_vapi_apologises_then_hangs_up(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    async with bridge(tmp_path, twilio, api_key="another-key") as b:
        options = b.options(new_sid("CA"))
        async with LiveCall(await dial(options), options) as call:
            assert await call.wait_until(lambda: call.ended, 15)
        report = call.report()
        assert report.hangup_by == "server" and report.bot_audio_ms > 1000  # espeak spoke
        assert call.audible_bytes > 0
        assert completed(b.twilio, options.call_sid) == 1
        assert b.vapi.refused == [401] and b.vapi.calls == []
        await asyncio.wait_for(b.call_over.wait(), 5)
        kinds = {event.kind: dict(event.data) for sid, event in b.events
                 if sid == options.call_sid}
        assert kinds["provider_failed"]["provider"] == "vapi"
        assert "401" in str(kinds["provider_failed"]["error"])
        assert kinds["hangup"] == {"reason": "apology"}


async def test_vapi_dropping_mid_call_is_apologised_for_then_hung_up(
    tmp_path: Path, twilio: FakeTwilioApi
) -> None:
    """VAPI's socket closes 1011 in the middle of its greeting: the caller hears the
    apology in the local voice, then the call ends through REST, and the record names
    the provider and the close."""
    async with bridge(tmp_path, twilio, greeting_ms=3000, drop_after_frames=40) as b:
        heard = Heard()
        rest_at: list[float] = []
        b.twilio.before_answer = lambda: rest_at.append(time.monotonic())
        options = b.options(new_sid("CA"))
        call = LiveCall(await dial(options), options, record=True, classify=heard.classify)
        async with call:
            assert await call.wait_until(lambda: call.ended, 20)
            vapi_call = b.vapi.calls[0]
            assert vapi_call.closed.is_set() and vapi_call.caller_frames >= 40
        report = call.report()
        assert report.hangup_by == "server" and not report.protocol_errors
        assert report.close_code != 1011  # a clean close, never an internal error of ours
        # After the greeting was cut, the caller heard speech that is not VAPI's: espeak.
        greeting_end = max(at for at, greeting in heard.frames if greeting)
        apology_frames = [at for at, greeting in heard.frames if not greeting and at > greeting_end]
        assert len(apology_frames) >= 50  # a second or more of apology
        assert call.audible_bytes > 0 and call.last_audible_end_s is not None
        # Then, and only then, the REST hang-up.
        assert completed(b.twilio, options.call_sid) == 1
        assert rest_at and rest_at[0] >= call.last_audible_end_s
        assert b.vapi.calls[0].controls == []  # nothing to tell a VAPI call that is gone
        # The record: which provider failed and why, and how the call ended.
        await asyncio.wait_for(b.call_over.wait(), 5)
        kinds = {event.kind: dict(event.data) for sid, event in b.events
                 if sid == options.call_sid}
        assert kinds["provider_failed"]["provider"] == "vapi"
        assert "1011" in str(kinds["provider_failed"]["error"])
        assert kinds["hangup"] == {"reason": "apology"}
