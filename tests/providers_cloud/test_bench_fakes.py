"""The fakes' cheap paths (the load benchmark runs them on the client core, next to the
callers) say exactly what their plain versions said, over the same sockets."""

from __future__ import annotations

import asyncio
import base64
import random
import time

import pytest
import websockets
from fakes.deepgram import FakeDeepgram
from fakes.deepgram_request import _loudness, _speech
from fakes.elevenlabs import FakeElevenLabs
from fakes.elevenlabs_multi import audio_message
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from callbridge.providers.base import SttSpeechStarted, SttUtteranceEnd, TranscriptUpdate
from callbridge.providers.stt.deepgram import DeepgramConfig, DeepgramSTT, build
from providers_cloud.helpers import SILENCE, SPEECH, take_until


def production_client(fake: FakeDeepgram) -> DeepgramSTT:
    config = DeepgramConfig.model_validate({"provider": "deepgram"})
    return build(config, {"DEEPGRAM_API_KEY": fake.api_key, "DEEPGRAM_BASE_URL": fake.base_url})


def test_deepgram_speech_test_is_the_peak_level_against_the_silence_level() -> None:
    rng = random.Random(13)
    quiet_codes = [0xFF, 0x7F, 0xFE, 0x7E, 0xF0, 0x70]
    for level in range(130):
        for _ in range(40):
            size = rng.choice([1, 2, 160])
            frame = bytes(rng.choice([rng.randrange(256), *quiet_codes]) for _ in range(size))
            assert _speech(frame, level) == (_loudness(frame) >= level), (level, frame)


@pytest.mark.parametrize("lean", [False, True])
async def test_deepgram_closes_a_stream_idle_for_its_timeout_with_net_0001(lean: bool) -> None:
    """Audio more often than the timeout keeps the stream open past it; silence on the
    socket then ends it with 1011 ``NET-0001``, no sooner than the timeout."""
    async with FakeDeepgram(idle_timeout_s=0.25, lean_socket=lean) as fake:
        query = "/v1/listen?encoding=mulaw&sample_rate=8000"
        url = fake.base_url.replace("http://", "ws://") + query
        headers = {"Authorization": f"Token {fake.api_key}"}
        async with websockets.connect(url, additional_headers=headers) as ws:
            for _ in range(6):  # 0.48 s of traffic, every 0.08 s
                await asyncio.sleep(0.08)
                await ws.send(b"\xff" * 160)
            last_sent = time.monotonic()
            with pytest.raises(ConnectionClosedError) as closed:
                async with asyncio.timeout(5):
                    await ws.recv()
            quiet_s = time.monotonic() - last_sent
        await asyncio.wait_for(fake.sessions[0].closed.wait(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "NET-0001")
    assert quiet_s >= 0.25 - 0.005  # the last frame reached the fake after last_sent
    assert fake.sessions[0].frames == 6 and fake.sessions[0].close_code == 1011


@pytest.mark.parametrize("context_id", [None, "ctx-1", 'odd "id" \u00e9'])
@pytest.mark.parametrize("text", ["Sure, I can help with your bill. ", ' He said "hi" \\ ', "x"])
def test_elevenlabs_audio_messages_are_made_once_and_read_as_if_made_each_time(
    text: str, context_id: str | None
) -> None:
    fake = FakeElevenLabs(ms_per_char=40, chunk_ms=100)
    audio = fake.audio_for(text.strip())
    size = fake.chunk_ms * 8
    pieces = [audio[i : i + size] for i in range(0, len(audio), size)]
    per_piece = max(1, -(-len(text) // len(pieces)))
    expected = []
    for index, piece in enumerate(pieces):
        span = list(text)[index * per_piece : (index + 1) * per_piece]
        start = index * fake.chunk_ms
        alignment = {
            "chars": span,
            "charStartTimesMs": [start + i * fake.ms_per_char for i in range(len(span))],
            "charDurationsMs": [fake.ms_per_char] * len(span),
        }
        expected.append(audio_message(base64.b64encode(piece).decode(), alignment, context_id))
    assert fake._messages(text, context_id) == expected
    assert fake._messages(text, context_id) == expected  # from the cache this time
    assert fake._messages(text, "another") != expected or context_id == "another"


@pytest.mark.parametrize("final_delay_s", [0.0, 0.05])
async def test_the_lean_deepgram_socket_serves_the_production_client_the_same_stream(
    final_delay_s: float,
) -> None:
    """Speech, an interim, Finalize answered (after a scripted wait: that message finishes
    in a task while later ones queue), CloseStream, a clean close; every byte kept."""
    fake = FakeDeepgram(["check my bill", "and more"], interim_after_frames=5,
                        final_delay_s=final_delay_s, lean_socket=True)
    async with fake:
        stream = await production_client(fake).open_stream()
        audio = [bytes([0x10 + i]) * 160 for i in range(12)] + [SILENCE] * 3
        for frame in audio:
            stream.push_audio(frame)
        stream.finalize()
        for frame in [SPEECH] * 2:  # sent while the final may still be on its way
            stream.push_audio(frame)
        events = await take_until(stream.events(), lambda e: isinstance(e, SttUtteranceEnd))
        await stream.aclose()
        await asyncio.wait_for(fake.sessions[0].closed.wait(), 5)
    assert events == [
        SttSpeechStarted(),
        TranscriptUpdate("check", is_final=False),
        TranscriptUpdate("check my bill", is_final=True, from_finalize=True),
        SttUtteranceEnd(),
    ]
    session = fake.sessions[0]
    assert bytes(session.audio) == b"".join(audio) + SPEECH * 2
    assert session.controls == ["Finalize", "CloseStream"]
    assert session.close_code == 1000


async def test_the_lean_deepgram_socket_refuses_a_bad_key_like_the_plain_one() -> None:
    async with FakeDeepgram(api_key="right", lean_socket=True) as fake:
        url = fake.base_url.replace("http://", "ws://") + "/v1/listen"
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url, additional_headers={"Authorization": "Token wrong"})
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["dg-error"] == "Invalid credentials."
    assert fake.refused == [401] and fake.sessions == []
