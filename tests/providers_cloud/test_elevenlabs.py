"""ElevenLabs stream-input TTS against the local fake ElevenLabs over a real WebSocket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes.elevenlabs import FakeElevenLabs

from callbridge.errors import ConfigError, ProviderError
from callbridge.providers.registry import spec_for
from callbridge.providers.retry import retry_stream
from callbridge.providers.tts.elevenlabs import ElevenLabsConfig, ElevenLabsTTS, build
from providers_cloud.helpers import RecordingSleep, wait_for

KEY = "test-elevenlabs-key"
SENTENCE = "Sure, let me check that for you."


def make(fake: FakeElevenLabs, **fields: Any) -> ElevenLabsTTS:
    config = ElevenLabsConfig.model_validate({"provider": "11labs", "voiceId": "voice1", **fields})
    return build(config, {"ELEVENLABS_API_KEY": KEY, "ELEVENLABS_BASE_URL": fake.base_url})


async def speak(tts: ElevenLabsTTS, text: str = SENTENCE) -> list[bytes]:
    async with asyncio.timeout(10):
        return [chunk async for chunk in tts.synthesize(text)]


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        build(ElevenLabsConfig(voice_id="v"), {})


def test_registry_block_uses_vapi_names() -> None:
    spec = spec_for("tts", "11labs")
    block = spec.config.model_validate({
        "provider": "11labs", "voiceId": "21m00Tcm4TlvDq8ikWAM", "model": "eleven_turbo_v2_5",
        "stability": 0.4, "similarityBoost": 0.8, "baseUrl": "https://api.eu.example",
    })
    tts = spec.build(block, {"ELEVENLABS_API_KEY": "k"})
    assert tts.url == (
        "wss://api.eu.example/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream-input"
        "?model_id=eleven_turbo_v2_5&output_format=ulaw_8000&auto_mode=true"
    )


async def test_speaks_a_segment_as_untouched_ulaw() -> None:
    async with FakeElevenLabs(chunk_ms=100) as fake:
        chunks = await speak(make(fake, stability=0.3, speed=1.1))
        await wait_for(lambda: fake.sessions[0].closed.is_set())
    assert b"".join(chunks) == fake.audio_for(SENTENCE)
    assert len(chunks) == fake.sessions[0].chunks_sent > 1
    session = fake.sessions[0]
    assert session.voice_id == "voice1"
    assert session.headers["xi-api-key"] == KEY
    assert "sec-websocket-extensions" not in session.headers
    assert session.query == {"model_id": "eleven_flash_v2_5", "output_format": "ulaw_8000",
                             "auto_mode": "true"}
    assert session.messages == [
        {"text": " ", "voice_settings": {"stability": 0.3, "similarity_boost": 0.75,
                                         "speed": 1.1}},
        {"text": SENTENCE + " ", "flush": True},
        {"text": ""},
    ]
    assert session.final_sent and session.close_code == 1000


async def test_segments_in_order_each_on_its_own_socket() -> None:
    async with FakeElevenLabs() as fake:
        tts = make(fake)
        first, second = await speak(tts, "One."), await speak(tts, "Two, three.")
    assert b"".join(first) == fake.audio_for("One.")
    assert b"".join(second) == fake.audio_for("Two, three.")
    assert [s.text for s in fake.sessions] == ["One. ", "Two, three. "]


async def test_blank_text_opens_no_socket() -> None:
    async with FakeElevenLabs() as fake:
        assert await speak(make(fake), "   ") == []
    assert fake.sessions == []


async def test_cancel_mid_segment_closes_the_socket_and_yields_nothing_more() -> None:
    async with FakeElevenLabs(chunk_ms=20, chunk_delay_s=0.01) as fake:
        received: list[bytes] = []
        first = asyncio.Event()

        async def play() -> None:
            async for chunk in make(fake).synthesize(SENTENCE * 3):
                received.append(chunk)
                first.set()

        task = asyncio.create_task(play())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        await asyncio.wait({task})
        count = len(received)
        await asyncio.wait_for(fake.sessions[0].closed.wait(), 5)
    assert task.cancelled() and len(received) == count
    assert not fake.sessions[0].final_sent  # closed before the vendor finished
    assert fake.sessions[0].chunks_sent < len(fake.audio_for(SENTENCE * 3)) // 160


async def test_aclose_on_the_iterator_also_closes_the_socket() -> None:
    async with FakeElevenLabs(chunk_ms=20, chunk_delay_s=0.01) as fake:
        stream = make(fake).synthesize(SENTENCE)
        assert await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(fake.sessions[0].closed.wait(), 5)
    assert not fake.sessions[0].final_sent


@pytest.mark.parametrize(("status", "retryable"), [(401, False), (400, False), (429, True),
                                                   (500, True), (503, True)])
async def test_refused_upgrade(status: int, retryable: bool) -> None:
    async with FakeElevenLabs(fail_upgrade=status) as fake:
        with pytest.raises(ProviderError, match=str(status)) as caught:
            await speak(make(fake))
    assert caught.value.retryable is retryable


async def test_wrong_key_is_refused_and_not_echoed() -> None:
    async with FakeElevenLabs(api_key="another") as fake:
        with pytest.raises(ProviderError, match="Invalid API key") as caught:
            await speak(make(fake))
    assert not caught.value.retryable and KEY not in str(caught.value)


async def test_close_1011_mid_audio_is_retryable() -> None:
    async with FakeElevenLabs(close_after_chunks=1) as fake:
        got: list[bytes] = []
        with pytest.raises(ProviderError, match="1011") as caught:
            async for chunk in make(fake).synthesize(SENTENCE):
                got.append(chunk)
    assert caught.value.retryable and len(got) == 1


async def test_vendor_error_message_decides_retryable() -> None:
    async with FakeElevenLabs(error_after_chunks=0) as fake:
        with pytest.raises(ProviderError, match="something went wrong") as transient:
            await speak(make(fake))
    async with FakeElevenLabs(error_after_chunks=0,
                              error=("Invalid API key", "invalid_api_key")) as fake:
        with pytest.raises(ProviderError, match="invalid_api_key") as fatal:
            await speak(make(fake))
    assert transient.value.retryable and not fatal.value.retryable


async def test_malformed_message_is_skipped_and_counted() -> None:
    async with FakeElevenLabs(malformed_after_chunks=1) as fake:
        tts = make(fake)
        chunks = await speak(tts)
    assert b"".join(chunks) == fake.audio_for(SENTENCE)
    assert tts.malformed_messages == 1


async def test_a_silent_vendor_times_out_retryably() -> None:
    async with FakeElevenLabs(hang=True) as fake:
        with pytest.raises(ProviderError, match="no answer") as caught:
            await speak(make(fake, readTimeoutS=0.5))
    assert caught.value.retryable


async def test_retry_reopens_until_audio_flows(sleep: RecordingSleep) -> None:
    async with FakeElevenLabs(close_after_chunks=0) as fake:
        tts = make(fake)
        with pytest.raises(ProviderError):
            _ = [c async for c in retry_stream(lambda: tts.synthesize(SENTENCE), sleep=sleep)]
    assert sleep.delays == [1.0, 2.0, 4.0] and len(fake.sessions) == 4


async def test_retry_gives_up_at_once_on_a_bad_key(sleep: RecordingSleep) -> None:
    async with FakeElevenLabs(api_key="another") as fake:
        tts = make(fake)
        with pytest.raises(ProviderError):
            _ = [c async for c in retry_stream(lambda: tts.synthesize(SENTENCE), sleep=sleep)]
    assert sleep.delays == [] and fake.refused == [401]
