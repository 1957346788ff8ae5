"""OpenAI-compatible /audio/speech (TTS) and /audio/transcriptions (STT) against the fake."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes.openai_audio import FakeOpenAIAudio
from fakes.script import Failure

from callbridge.audio import levels, ulaw
from callbridge.errors import ConfigError, ProviderError
from callbridge.providers.base import TranscriptUpdate
from callbridge.providers.registry import spec_for
from callbridge.providers.retry import retry_stream
from callbridge.providers.stt.openai_compatible import OpenAITranscription
from callbridge.providers.tts.openai_compatible import OpenAISpeech
from providers_cloud.helpers import RecordingSleep, take_until, wait_for

KEY = "test-speech-key"
ENV = {"SPEECH_KEY": KEY}


def tts(fake: FakeOpenAIAudio, **fields: Any) -> OpenAISpeech:
    spec = spec_for("tts", "openai-compatible")
    block = spec.config.model_validate({"provider": "openai-compatible", "baseUrl": fake.base_url,
                                        "apiKeyEnv": "SPEECH_KEY", **fields})
    speech = spec.build(block, ENV)
    assert isinstance(speech, OpenAISpeech)
    return speech


def stt(fake: FakeOpenAIAudio, **fields: Any) -> OpenAITranscription:
    spec = spec_for("stt", "openai-compatible")
    block = spec.config.model_validate({"provider": "openai-compatible", "baseUrl": fake.base_url,
                                        "apiKeyEnv": "SPEECH_KEY", **fields})
    transcription = spec.build(block, ENV)
    assert isinstance(transcription, OpenAITranscription)
    return transcription


async def speak(speech: OpenAISpeech, text: str) -> bytes:
    async with asyncio.timeout(10):
        return b"".join([chunk async for chunk in speech.synthesize(text)])


@pytest.mark.parametrize("kind", ["tts", "stt"])
def test_config_errors_name_what_is_missing(kind: str) -> None:
    spec = spec_for(kind, "openai-compatible")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="baseUrl"):
        spec.build(spec.config.model_validate({"provider": "openai-compatible"}), {})
    block = spec.config.model_validate(
        {"provider": "openai-compatible", "baseUrl": "http://h/v1", "apiKeyEnv": "KOKORO_KEY"})
    with pytest.raises(ConfigError, match="KOKORO_KEY"):
        spec.build(block, {})


async def test_speech_is_resampled_to_8k_ulaw() -> None:
    text = "Your bill is twenty dollars."
    async with FakeOpenAIAudio() as fake:
        audio = await speak(tts(fake, model="kokoro", voiceId="af_bella", speed=1.2), text)
    source = fake.pcm_for(text)
    assert abs(len(audio) - len(source) // 2 // 3) <= 32  # 24 kHz PCM16 → 8 kHz bytes
    assert abs(levels.rms_dbfs(ulaw.decode(audio[800:-800])) - levels.rms_dbfs(source)) < 1.0
    assert fake.speech_requests == [{"model": "kokoro", "voice": "af_bella", "input": text,
                                     "response_format": "pcm", "speed": 1.2}]
    assert fake.headers[0]["authorization"] == f"Bearer {KEY}"


async def test_speech_at_8k_passes_through_untouched() -> None:
    async with FakeOpenAIAudio(rate_hz=8000) as fake:
        audio = await speak(tts(fake, sampleRateHz=8000), "Hello.")
    assert audio == ulaw.encode(fake.pcm_for("Hello."))


async def test_speech_cancel_closes_the_response() -> None:
    async with FakeOpenAIAudio(chunk_bytes=960, chunk_delay_s=0.01) as fake:
        stream = tts(fake).synthesize("A long answer. " * 20)
        assert await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        await wait_for(lambda: fake.speech_aborted == 1)


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (401, False), (429, True),
                                                   (500, True)])
async def test_speech_http_errors(status: int, retryable: bool) -> None:
    async with FakeOpenAIAudio(speech_failures=[Failure(status)]) as fake:
        with pytest.raises(ProviderError, match=f"HTTP {status}") as caught:
            await speak(tts(fake), "Hi.")
    assert caught.value.retryable is retryable


async def test_speech_wrong_key_drop_and_hang() -> None:
    async with FakeOpenAIAudio(api_key="other", drop_speech_after_chunks=1) as fake:
        with pytest.raises(ProviderError, match="401") as refused:
            await speak(tts(fake), "Hi.")
    async with FakeOpenAIAudio(drop_speech_after_chunks=1) as fake:
        with pytest.raises(ProviderError) as dropped:
            await speak(tts(fake), "A long answer. " * 5)
    async with FakeOpenAIAudio(speech_failures=[Failure(hang=True)]) as fake:
        with pytest.raises(ProviderError, match="timed out") as hung:
            await speak(tts(fake, timeoutS=0.5), "Hi.")
    assert not refused.value.retryable and KEY not in str(refused.value)
    assert dropped.value.retryable and hung.value.retryable


async def test_speech_retry_recovers(sleep: RecordingSleep) -> None:
    async with FakeOpenAIAudio(speech_failures=[Failure(503)]) as fake:
        speech = tts(fake)
        chunks = [c async for c in retry_stream(lambda: speech.synthesize("Hi."), sleep=sleep)]
    assert b"".join(chunks) and sleep.delays == [1.0] and len(fake.speech_requests) == 2


async def test_transcribes_each_utterance_in_order_as_wav() -> None:
    first = [bytes([0x20 + i % 64]) * 160 for i in range(25)]
    second = [bytes([0x90]) * 160] * 10
    async with FakeOpenAIAudio(["check my bill", "thank you"]) as fake:
        provider = stt(fake, model="Systran/faster-whisper-small", prompt="Billing")
        stream = await provider.open_stream()
        for frame in first:
            stream.push_audio(frame)
        stream.finalize()
        for frame in second:
            stream.push_audio(frame)
        stream.finalize()
        events = await take_until(stream.events(), lambda e: e.text == "thank you")
        await stream.aclose()
    assert events == [TranscriptUpdate("check my bill", is_final=True, speech_final=True),
                      TranscriptUpdate("thank you", is_final=True, speech_final=True)]
    upload = fake.uploads[0]
    assert upload.rate_hz == 8000 and upload.pcm16 == ulaw.decode(b"".join(first))
    assert upload.fields == {"model": "Systran/faster-whisper-small", "response_format": "json",
                             "language": "en", "prompt": "Billing"}
    assert (upload.filename, upload.content_type) == ("utterance.wav", "audio/wav")
    assert fake.uploads[1].pcm16 == ulaw.decode(b"".join(second))


async def test_empty_utterance_is_an_empty_final_without_a_request() -> None:
    async with FakeOpenAIAudio(["unused"]) as fake:
        stream = await stt(fake).open_stream()
        stream.finalize()
        events = await take_until(stream.events(), lambda e: True)
        await stream.aclose()
    assert events == [TranscriptUpdate("", is_final=True, speech_final=True)]
    assert fake.uploads == []


async def test_long_utterance_keeps_the_newest_audio() -> None:
    async with FakeOpenAIAudio(["x"]) as fake:
        stream = await stt(fake, maxUtteranceS=2).open_stream()
        frames = [bytes([i % 200]) * 160 for i in range(150)]  # 3 s
        for frame in frames:
            stream.push_audio(frame)
        stream.finalize()
        await take_until(stream.events(), lambda e: True)
        await stream.aclose()
    assert stream.dropped_bytes == 8000
    assert fake.uploads[0].pcm16 == ulaw.decode(b"".join(frames)[8000:])


async def test_a_refused_key_ends_the_stream_without_retrying() -> None:
    async with FakeOpenAIAudio(transcription_failures=[Failure(401)]) as fake:
        stream = await stt(fake).open_stream()
        stream.push_audio(bytes([0x10]) * 160)
        stream.finalize()
        with pytest.raises(ProviderError) as caught:
            await take_until(stream.events(), lambda e: False)
        await stream.aclose()
    assert caught.value.retryable is False and len(fake.uploads) == 1


async def test_aclose_ends_events() -> None:
    async with FakeOpenAIAudio() as fake:
        stream = await stt(fake).open_stream()
        stream.push_audio(bytes([0x10]) * 160)
        await stream.aclose()
        assert [e async for e in stream.events()] == []
        stream.finalize()  # ignored after close
    assert fake.uploads == []
