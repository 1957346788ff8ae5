"""Deepgram streaming STT against the local fake Deepgram over a real WebSocket."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest
from fakes.deepgram import FakeDeepgram

from callbridge.errors import ConfigError, ProviderError
from callbridge.providers.base import SttSpeechStarted, SttUtteranceEnd, TranscriptUpdate
from callbridge.providers.registry import spec_for
from callbridge.providers.retry import retry_call
from callbridge.providers.stt.deepgram import DeepgramConfig, DeepgramSTT, build
from providers_cloud.helpers import SILENCE, SPEECH, RecordingSleep, take_until, wait_for

KEY = "test-deepgram-key"


def make(fake: FakeDeepgram, **fields: object) -> DeepgramSTT:
    config = DeepgramConfig.model_validate({"provider": "deepgram", **fields})
    return build(config, {"DEEPGRAM_API_KEY": KEY, "DEEPGRAM_BASE_URL": fake.base_url})


def is_final(event: object) -> bool:
    return isinstance(event, TranscriptUpdate) and event.is_final


def test_registry_builds_from_camel_case_block() -> None:
    spec = spec_for("stt", "deepgram")
    block = spec.config.model_validate(
        {"provider": "deepgram", "model": "nova-3", "utteranceEndMs": 1500, "baseUrl": "https://eu.example"}
    )
    stt = spec.build(block, {"DEEPGRAM_API_KEY": "k"})
    assert stt.url.startswith("wss://eu.example/v1/listen?model=nova-3&")
    assert "utterance_end_ms=1500" in stt.url


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        build(DeepgramConfig(), {})


def test_block_base_url_wins_over_environment() -> None:
    config = DeepgramConfig.model_validate({"baseUrl": "http://block.example:81"})
    stt = build(config, {"DEEPGRAM_API_KEY": "k", "DEEPGRAM_BASE_URL": "https://env.example"})
    assert stt.url.startswith("ws://block.example:81/v1/listen?")


async def test_transcribes_an_utterance_and_forwards_ulaw_untouched() -> None:
    async with FakeDeepgram(["check my bill"], interim_after_frames=5) as fake:
        stream = await make(fake).open_stream()
        audio = [bytes([0x10 + i]) * 160 for i in range(12)] + [SILENCE] * 3
        for frame in audio:
            stream.push_audio(frame)
        stream.finalize()
        events = await take_until(stream.events(), lambda e: isinstance(e, SttUtteranceEnd))
        await stream.aclose()

    assert events == [
        SttSpeechStarted(),
        TranscriptUpdate("check", is_final=False),
        TranscriptUpdate("check my bill", is_final=True, from_finalize=True),
        SttUtteranceEnd(),
    ]
    session = fake.sessions[0]
    assert bytes(session.audio) == b"".join(audio)
    assert session.headers["authorization"] == f"Token {KEY}"
    assert "sec-websocket-extensions" not in session.headers  # no permessage-deflate offered
    assert session.path == "/v1/listen"
    assert session.query == {
        "model": "nova-2", "encoding": "mulaw", "sample_rate": "8000", "channels": "1",
        "interim_results": "true", "endpointing": "300", "utterance_end_ms": "1000",
        "vad_events": "true", "smart_format": "true", "language": "en-US",
    }
    assert session.controls == ["Finalize", "CloseStream"]
    assert session.close_code == 1000


async def test_provider_endpointing_marks_speech_final_and_keeps_order() -> None:
    async with FakeDeepgram(["first one", "second one"], endpointing_frames=3) as fake:
        stream = await make(fake).open_stream()
        for frame in [SPEECH] * 4 + [SILENCE] * 3 + [SPEECH] * 4 + [SILENCE] * 3:
            stream.push_audio(frame)
        events = [e async for e in _finals(stream, 2)]
        await stream.aclose()
    assert [(e.text, e.speech_final) for e in events] == [("first one", True), ("second one", True)]


async def _finals(stream: object, count: int):  # type: ignore[no-untyped-def]
    seen = 0
    async with asyncio.timeout(5):
        async for event in stream.events():  # type: ignore[attr-defined]
            if is_final(event):
                yield event
                seen += 1
                if seen == count:
                    return


async def test_audio_goes_out_in_chunks_and_finalize_flushes_what_waits() -> None:
    async with FakeDeepgram(["x"]) as fake:
        stream = await make(fake, chunkMs=100).open_stream()
        frames = [bytes([0x10 + i]) * 160 for i in range(10)]
        for frame in frames:
            stream.push_audio(frame)
        await wait_for(lambda: fake.sessions[0].frames == 10)
        assert fake.sessions[0].messages == [800, 800]  # five 20 ms frames a message
        stream.push_audio(SILENCE)
        stream.push_audio(SILENCE)
        stream.finalize()  # the two frames go now, before Finalize, without their partners
        await take_until(stream.events(), is_final)
        session = fake.sessions[0]
        assert session.messages == [800, 800, 320, "Finalize"]
        await stream.aclose()
    assert session.messages[-1] == "CloseStream"
    assert bytes(session.audio) == b"".join(frames) + SILENCE * 2


async def test_close_stream_flushes_the_audio_before_it() -> None:
    async with FakeDeepgram() as fake:
        stream = await make(fake, chunkMs=100).open_stream()
        for _ in range(7):
            stream.push_audio(SILENCE)
        await stream.aclose()
    assert fake.sessions[0].messages == [800, 320, "CloseStream"]


async def test_by_default_a_message_is_two_twilio_frames() -> None:
    async with FakeDeepgram() as fake:
        stream = await make(fake).open_stream()
        for _ in range(5):
            stream.push_audio(SILENCE)
        await stream.aclose()
    assert fake.sessions[0].messages == [320, 320, 160, "CloseStream"]


async def test_finalize_is_written_before_push_returns_to_the_caller() -> None:
    """No task hop between the turn's end and the socket: Finalize is on the wire when
    ``finalize`` returns (the fake sees it without the client yielding in between)."""
    async with FakeDeepgram(["x"]) as fake:
        stream = await make(fake, chunkMs=100).open_stream()
        await wait_for(lambda: bool(fake.sessions))
        for _ in range(5):
            stream.push_audio(SPEECH)
        stream.push_audio(SILENCE)
        stream.finalize()
        transport = stream._ws.transport
        assert transport.get_write_buffer_size() == 0  # written to the socket, not queued
        assert stream._outbox == deque()
        await wait_for(lambda: fake.sessions[0].controls == ["Finalize"])
        assert fake.sessions[0].messages == [800, 160, "Finalize"]
        await stream.aclose()


async def test_a_socket_that_pushes_back_queues_drops_the_oldest_then_catches_up() -> None:
    """Back-pressure as asyncio signals it (the transport's ``pause_writing``): the
    owner never waits, the outbox keeps the newest audio, and once the socket drains
    the rest goes out in order, the control message last."""
    async with FakeDeepgram() as fake:
        stream = await make(fake, outboxFrames=10, chunkMs=40).open_stream()
        await wait_for(lambda: bool(fake.sessions))
        stream._ws.pause_writing()  # what the transport calls when its buffer is full
        frames = [bytes([i]) * 160 for i in range(25)]
        for frame in frames:
            stream.push_audio(frame)
        stream.finalize()
        assert stream.dropped_frames == 13  # the first chunk was taken before the socket said no
        await asyncio.sleep(0.05)
        # The sender task's awaited send wrote that chunk and waits for the drain.
        assert fake.sessions[0].messages == [320]
        stream._ws.resume_writing()
        await wait_for(lambda: fake.sessions[0].controls == ["Finalize"])
        await stream.aclose()
    session = fake.sessions[0]
    assert bytes(session.audio) == frames[0] + frames[1] + b"".join(frames[15:])
    assert session.messages[:7] == [320, 320, 320, 320, 320, 320, "Finalize"]


async def test_a_lone_frame_goes_out_alone_after_one_chunk_time() -> None:
    async with FakeDeepgram() as fake:
        stream = await make(fake, chunkMs=40).open_stream()
        stream.push_audio(SILENCE)
        await asyncio.sleep(0.01)
        assert fake.sessions[0].frames == 0  # still waiting for its partner
        await wait_for(lambda: fake.sessions[0].frames == 1)
        stream.push_audio(SPEECH)  # the next one waits again, then goes alone too
        await wait_for(lambda: fake.sessions[0].frames == 2)
        assert fake.sessions[0].audio_messages == 2
        await stream.aclose()
    assert bytes(fake.sessions[0].audio) == SILENCE + SPEECH


async def test_a_lone_frame_waits_its_own_chunk_time_on_a_timer_armed_before_it() -> None:
    """The wait's timer is never cancelled: armed by the first frame of a chunk that
    went out, it fires while a later lone frame has waited less than a chunk's time,
    and that frame waits the rest before it goes alone."""
    async with FakeDeepgram() as fake:
        stream = await make(fake, chunkMs=100).open_stream()
        loop = asyncio.get_running_loop()
        for _ in range(5):  # one whole message; the first frame armed the timer
            stream.push_audio(SILENCE)
        await wait_for(lambda: fake.sessions[0].frames == 5)
        await asyncio.sleep(0.06)
        stream.push_audio(SPEECH)
        pushed = loop.time()
        await asyncio.sleep(0.07)  # past the old timer, short of this frame's 100 ms
        assert fake.sessions[0].frames == 5
        await wait_for(lambda: fake.sessions[0].frames == 6)
        assert loop.time() - pushed >= 0.099
        await stream.aclose()
    assert fake.sessions[0].messages == [800, 160, "CloseStream"]


async def test_no_keepalive_while_audio_flows() -> None:
    async with FakeDeepgram() as fake:
        stream = await make(fake, keepaliveS=0.2).open_stream()
        for _ in range(20):  # 0.4 s of audio, one frame every 20 ms
            stream.push_audio(SILENCE)
            await asyncio.sleep(0.02)
        await wait_for(lambda: fake.sessions[0].frames == 20)
        assert "KeepAlive" not in fake.sessions[0].controls
        await wait_for(lambda: "KeepAlive" in fake.sessions[0].controls)  # then idle
        await stream.aclose()
    assert stream.keepalives_sent >= 1


async def test_finalize_without_speech_gives_an_empty_final() -> None:
    async with FakeDeepgram(["unused"]) as fake:
        stream = await make(fake).open_stream()
        stream.push_audio(SILENCE)
        stream.finalize()
        events = await take_until(stream.events(), is_final)
        await stream.aclose()
    assert events == [TranscriptUpdate("", is_final=True, from_finalize=True)]


async def test_keepalive_flows_while_no_audio_does() -> None:
    async with FakeDeepgram() as fake:
        stream = await make(fake, keepaliveS=0.02).open_stream()
        await wait_for(lambda: fake.sessions and fake.sessions[0].controls.count("KeepAlive") >= 2)
        await stream.aclose()
    assert fake.sessions[0].frames == 0
    assert fake.sessions[0].controls[-1] == "CloseStream"


async def test_aclose_ends_the_event_stream_cleanly() -> None:
    async with FakeDeepgram(["hello there"]) as fake:
        stream = await make(fake).open_stream()
        for frame in [SPEECH] * 3:
            stream.push_audio(frame)
        await stream.aclose()
        events = [e async for e in stream.events()]
    # CloseStream flushes the pending utterance before the server closes with 1000.
    assert TranscriptUpdate("hello there", is_final=True, from_finalize=True) in events
    assert fake.sessions[0].close_code == 1000
    stream.push_audio(SPEECH)  # after close: ignored, never raises
    stream.finalize()


async def test_wrong_key_is_a_non_retryable_error_without_the_key() -> None:
    async with FakeDeepgram(api_key="the-real-key") as fake:
        with pytest.raises(ProviderError) as caught:
            await make(fake).open_stream()
    assert not caught.value.retryable
    assert "401" in str(caught.value) and "Invalid credentials" in str(caught.value)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (403, False), (429, True), (503, True)]
)
async def test_upgrade_status_decides_retryable(status: int, retryable: bool) -> None:
    async with FakeDeepgram(fail_upgrade=status) as fake:
        with pytest.raises(ProviderError) as caught:
            await make(fake).open_stream()
    assert caught.value.retryable is retryable


async def test_bad_query_parameter_is_refused_by_the_fake_like_deepgram() -> None:
    async with FakeDeepgram() as fake:
        stt = make(fake)
        stt.url = stt.url.replace("utterance_end_ms=1000", "utterance_end_ms=500")
        with pytest.raises(ProviderError, match="utterance_end_ms") as caught:
            await stt.open_stream()
    assert not caught.value.retryable


async def test_close_1011_mid_stream_is_retryable() -> None:
    async with FakeDeepgram(["x"], close_after_frames=3, close_reason="NET-0000") as fake:
        stream = await make(fake).open_stream()
        for frame in [SPEECH] * 5:
            stream.push_audio(frame)
        with pytest.raises(ProviderError, match="1011") as caught:
            await take_until(stream.events(), lambda e: False)
        await stream.aclose()
    assert caught.value.retryable


async def test_close_for_bad_data_is_not_retryable() -> None:
    fake_server = FakeDeepgram(close_after_frames=1, close_code=1008, close_reason="DATA-0000")
    async with fake_server as fake:
        stream = await make(fake).open_stream()
        stream.push_audio(SPEECH)
        with pytest.raises(ProviderError) as caught:
            await take_until(stream.events(), lambda e: False)
        await stream.aclose()
    assert not caught.value.retryable


async def test_malformed_json_is_logged_counted_and_skipped() -> None:
    async with FakeDeepgram(["still works"], malformed_after_frames=1) as fake:
        stream = await make(fake).open_stream()
        for frame in [SPEECH] * 3:
            stream.push_audio(frame)
        stream.finalize()
        events = await take_until(stream.events(), is_final)
        await stream.aclose()
    assert events[-1] == TranscriptUpdate("still works", is_final=True, from_finalize=True)
    assert stream.malformed_messages == 1


async def test_unreachable_server_is_retryable() -> None:
    async with FakeDeepgram() as fake:
        url = fake.base_url
    config = DeepgramConfig(connect_timeout_s=2)
    stt = build(config, {"DEEPGRAM_API_KEY": KEY, "DEEPGRAM_BASE_URL": url})
    with pytest.raises(ProviderError) as caught:
        await stt.open_stream()
    assert caught.value.retryable


async def test_retry_backs_off_then_gives_up_on_retryable_failures(sleep: RecordingSleep) -> None:
    async with FakeDeepgram(fail_upgrade=503) as fake:
        with pytest.raises(ProviderError):
            await retry_call(make(fake).open_stream, sleep=sleep)
    assert sleep.delays == [1.0, 2.0, 4.0]
    assert fake.refused == [503] * 4


async def test_retry_does_not_retry_a_bad_key(sleep: RecordingSleep) -> None:
    async with FakeDeepgram(api_key="other") as fake:
        with pytest.raises(ProviderError):
            await retry_call(make(fake).open_stream, sleep=sleep)
    assert sleep.delays == []
    assert fake.refused == [401]
