"""Deepgram's quiet cadence against the local fake Deepgram (websockets' server and the
lean one the benchmarks use): while the caller is quiet the audio goes in 200 ms
messages; speech sends what is held at once and the cadence is 40 ms again; control
messages and reconnects see every byte, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fakes.deepgram import FakeDeepgram

from callbridge.engine.events import EngineEvent, SttUp
from callbridge.engine.speech import SpeechTracker
from callbridge.engine.stt_link import SttLink
from callbridge.providers.base import QuietAwareStream, TranscriptUpdate
from callbridge.providers.stt.deepgram import DeepgramConfig, DeepgramSTT, build
from providers_cloud.helpers import SILENCE, SPEECH, take_until, wait_for

KEY = "test-deepgram-key"


@pytest.fixture(params=[False, True], ids=["websockets", "lean"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(["hello there"], lean_socket=request.param) as server:
        yield server


def make(fake: FakeDeepgram, **fields: object) -> DeepgramSTT:
    config = DeepgramConfig.model_validate({"provider": "deepgram", **fields})
    return build(config, {"DEEPGRAM_API_KEY": KEY, "DEEPGRAM_BASE_URL": fake.base_url})


def quiet_frames(count: int) -> list[bytes]:
    """Distinct near-silent frames (the fake hears no speech), so order is checked too."""
    return [bytes([0xF0 + i % 15]) * 160 for i in range(count)]


def is_final(event: object) -> bool:
    return isinstance(event, TranscriptUpdate) and event.is_final


async def test_quiet_audio_goes_in_200_ms_messages_a_fifth_of_them(fake: FakeDeepgram) -> None:
    stt = make(fake)
    loud, quiet = await stt.open_stream(), await stt.open_stream()
    assert isinstance(quiet, QuietAwareStream)
    quiet.caller_quiet(True)
    frames = quiet_frames(50)  # one second
    for frame in frames:
        loud.push_audio(frame)
        quiet.push_audio(frame)
    await wait_for(lambda: len(fake.sessions) == 2 and all(
        s.frames == 50 for s in fake.sessions))
    by_default, batched = fake.sessions
    assert by_default.messages == [320] * 25
    assert batched.messages == [1600] * 5  # ≤ 250 ms each, as Deepgram asks
    await loud.aclose()
    await quiet.aclose()
    assert bytes(batched.audio) == bytes(by_default.audio) == b"".join(frames)


async def test_speech_sends_what_is_held_at_once_with_its_first_frame(
    fake: FakeDeepgram,
) -> None:
    stream = await make(fake).open_stream()
    await wait_for(lambda: bool(fake.sessions))
    stream.caller_quiet(True)
    held = quiet_frames(7)
    for frame in held:
        stream.push_audio(frame)
    assert stream._audio_queued == 7  # held: 140 ms, short of a quiet message
    stream.push_audio(SPEECH)
    stream.caller_quiet(False)
    # On the wire when the call returns: no task hop, no timer between.
    assert stream._audio_queued == 0 and stream._ws.transport.get_write_buffer_size() == 0
    await wait_for(lambda: fake.sessions[0].frames == 8)
    assert fake.sessions[0].messages == [8 * 160]
    for _ in range(4):  # the speech cadence again: two frames a message
        stream.push_audio(SPEECH)
    await wait_for(lambda: fake.sessions[0].frames == 12)
    assert fake.sessions[0].messages == [8 * 160, 320, 320]
    assert any(e.get("type") == "SpeechStarted" for e in fake.sessions[0].sent)
    await stream.aclose()
    assert bytes(fake.sessions[0].audio) == b"".join(held) + SPEECH * 5


async def test_finalize_comes_after_all_the_held_audio(fake: FakeDeepgram) -> None:
    stream = await make(fake).open_stream()
    for _ in range(10):
        stream.push_audio(SPEECH)  # "hello there", at the speech cadence
    stream.caller_quiet(True)
    frames = quiet_frames(23)
    for frame in frames:
        stream.push_audio(frame)
    stream.finalize()  # 3 frames held: they go first, then Finalize
    events = await take_until(stream.events(), is_final)
    session = fake.sessions[0]
    assert session.messages == [320] * 5 + [1600, 1600, 480, "Finalize"]
    final = events[-1]
    assert isinstance(final, TranscriptUpdate) and final.from_finalize
    assert final.text == "hello there"
    await stream.aclose()
    assert session.messages[-1] == "CloseStream"
    assert bytes(session.audio) == SPEECH * 10 + b"".join(frames)


async def test_close_stream_flushes_the_held_audio_first(fake: FakeDeepgram) -> None:
    stream = await make(fake).open_stream()
    stream.caller_quiet(True)
    frames = quiet_frames(4)
    for frame in frames:
        stream.push_audio(frame)
    await stream.aclose()
    assert fake.sessions[0].messages == [640, "CloseStream"]
    assert bytes(fake.sessions[0].audio) == b"".join(frames)


async def test_held_audio_goes_after_the_quiet_chunk_time_without_more_frames(
    fake: FakeDeepgram,
) -> None:
    """The hold limit is served by the stream's one lone-frame timer, not by the next
    frame: a caller who sends nothing more still has this audio sent."""
    stream = await make(fake, quietChunkMs=100).open_stream()
    await wait_for(lambda: bool(fake.sessions))
    loop = asyncio.get_running_loop()
    stream.caller_quiet(True)
    stream.push_audio(SILENCE)
    pushed = loop.time()
    stream.push_audio(SILENCE)
    await asyncio.sleep(0.05)  # past the speech cadence's 40 ms: still held
    assert fake.sessions[0].frames == 0
    await wait_for(lambda: fake.sessions[0].frames == 2)
    assert loop.time() - pushed >= 0.099
    assert fake.sessions[0].messages == [320]
    await stream.aclose()


async def test_after_speech_a_lone_frame_waits_the_speech_time_not_the_quiet_one(
    fake: FakeDeepgram,
) -> None:
    """The timer armed for a quiet wait is dropped when speech comes: the next lone
    frame goes after 40 ms, not after what was left of 200 ms."""
    stream = await make(fake).open_stream()
    await wait_for(lambda: bool(fake.sessions))
    loop = asyncio.get_running_loop()
    stream.caller_quiet(True)
    stream.push_audio(SILENCE)  # arms the 200 ms wait
    stream.caller_quiet(False)  # sent now
    await wait_for(lambda: fake.sessions[0].frames == 1)
    stream.push_audio(SPEECH)
    pushed = loop.time()
    await wait_for(lambda: fake.sessions[0].frames == 2)
    assert loop.time() - pushed < 0.15
    assert fake.sessions[0].messages == [160, 160]
    await stream.aclose()


async def test_a_small_outbox_caps_the_quiet_message_instead_of_dropping_audio() -> None:
    async with FakeDeepgram() as fake:
        stream = await make(fake, outboxFrames=10, quietChunkMs=250).open_stream()
        stream.caller_quiet(True)
        frames = quiet_frames(30)
        for frame in frames:
            stream.push_audio(frame)
        await stream.aclose()
    assert stream.dropped_frames == 0
    assert fake.sessions[0].messages == [1600, 1600, 1600, "CloseStream"]
    assert bytes(fake.sessions[0].audio) == b"".join(frames)


# ---------------------------------------------------------------- through the link


class Caller:
    """The engine's side: the tracker hears each frame, then the link gets it."""

    def __init__(self, link: SttLink) -> None:
        self.link, self.speech, self.now, self.sent = link, SpeechTracker(), 0.0, bytearray()
        link._speech = self.speech

    def frames(self, frames: list[bytes], *, speech: bool) -> None:
        for frame in frames:
            self.now += 0.02
            self.speech.update(speech, -20.0 if speech else -70.0, 20, self.now, None)
            self.link.push_audio(frame)
            self.sent += frame


async def test_a_call_through_the_link_keeps_every_byte_in_order_across_a_reconnect() -> None:
    """A caller quiet, then speaking (finalized), then quiet; the vendor drops the
    socket: the new one gets the ring at the speech cadence first, as before, then the
    quiet cadence; every byte arrives once per socket, in order."""
    async with FakeDeepgram(["hello there"], close_after_frames=80) as fake:
        posted: list[EngineEvent] = []
        link = SttLink(make(fake), posted.append, delays_s=(0.0,))
        task = asyncio.create_task(link.run())
        caller = Caller(link)
        await wait_for(lambda: bool(fake.sessions))
        await asyncio.sleep(0.01)  # the stream is the link's
        caller.frames(quiet_frames(25), speech=False)  # 14 at 40 ms; from the 15th held
        await wait_for(lambda: fake.sessions[0].frames == 24)
        assert fake.sessions[0].messages == [320] * 7 + [1600]  # the 25th waits
        caller.frames([SPEECH] * 10, speech=True)  # held + first frame at once, then 40 ms
        link.finalize()  # the last speech frame goes before it
        await wait_for(lambda: any(
            isinstance(e, TranscriptUpdate) and e.from_finalize for e in posted))
        assert fake.sessions[0].messages[8:] == [320] * 5 + [160, "Finalize"]
        caller.frames(quiet_frames(45), speech=False)  # the fake closes after frame 80
        await wait_for(lambda: any(isinstance(e, SttUp) for e in posted))
        first, second = fake.sessions[:2]
        assert first.frames == 80 and bytes(first.audio) == bytes(caller.sent[: 80 * 160])
        # The ring (what the final did not cover: 45 frames) goes first, two frames a
        # message; its odd last frame then waits with the caller's quiet audio.
        await wait_for(lambda: second.frames == 44)
        assert second.messages == [320] * 22
        assert bytes(second.audio) == bytes(caller.sent[35 * 160 : 79 * 160])
        caller.frames(quiet_frames(10), speech=False)
        link.finalize()
        await wait_for(lambda: "Finalize" in second.messages)
        assert second.messages[22:] == [1600, 160, "Finalize"]
        assert bytes(second.audio) == bytes(caller.sent[35 * 160 :])
        await link.aclose()
        await asyncio.wait_for(task, 2)
