"""espeak-ng TTS: real audio of plausible length, μ-law chunks, cancellation that sticks."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from pydantic import ValidationError

from callbridge.audio import ulaw
from callbridge.audio.levels import rms_dbfs
from callbridge.errors import ConfigError
from callbridge.providers.registry import build_provider
from callbridge.providers.tts.espeak import (
    CHUNK_MS,
    EspeakBlock,
    EspeakTts,
    engine,
    synthesize_pcm,
)

SENTENCE = "Thanks for calling. Press one for billing."
LONG = " ".join(["This sentence is long and will be cut off before it is finished."] * 12)


@pytest.fixture(scope="module")
def tts() -> EspeakTts:
    return EspeakTts()


def _seconds(pcm16: bytes, rate_hz: int = 8000) -> float:
    return len(pcm16) / 2 / rate_hz


def test_synthesize_pcm_is_speech_of_plausible_length() -> None:
    pcm = synthesize_pcm(SENTENCE)
    assert 1.0 < _seconds(pcm) < 4.0
    assert rms_dbfs(pcm) > -35.0


def test_synthesize_pcm_honours_rate_and_speed() -> None:
    at_8k = synthesize_pcm(SENTENCE, 8000)
    at_16k = synthesize_pcm(SENTENCE, 16000)
    assert _seconds(at_16k, 16000) == pytest.approx(_seconds(at_8k), rel=0.01)
    slow = synthesize_pcm(SENTENCE, rate_wpm=100)
    fast = synthesize_pcm(SENTENCE, rate_wpm=300)
    assert _seconds(slow) > 1.5 * _seconds(fast)


async def test_blank_text_is_no_audio(tts: EspeakTts) -> None:
    assert synthesize_pcm("") == b""
    assert [c async for c in tts.synthesize("  ")] == []


async def test_synthesize_streams_ulaw_chunks(tts: EspeakTts) -> None:
    chunks = [chunk async for chunk in tts.synthesize(SENTENCE)]
    assert len(chunks) > 3
    assert all(len(c) <= 2 * CHUNK_MS * 8 for c in chunks)
    audio = b"".join(chunks)
    # Same speech as the one-shot path, give or take the streaming resampler's edges.
    assert len(audio) == pytest.approx(len(synthesize_pcm(SENTENCE)) // 2, abs=200)
    assert rms_dbfs(ulaw.decode(audio)) > -35.0


async def test_aclose_mid_sentence_stops_espeak(tts: EspeakTts) -> None:
    full = len([c async for c in tts.synthesize(LONG)])
    stream = tts.synthesize(LONG)
    first = await anext(stream)
    await stream.aclose()
    assert first
    assert not engine()._lock.locked()  # the worker has returned, not just been abandoned
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert full > 50  # the sentence really was long enough to be cut


async def test_cancelling_the_consumer_task_stops_it(tts: EspeakTts) -> None:
    """Consumers hold the stream in ``aclosing`` so cancellation closes it at once
    (without it, the loop's async-generator finalizer closes it a moment later)."""
    received: list[bytes] = []
    got_one = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(tts.synthesize(LONG)) as chunks:
            async for chunk in chunks:
                received.append(chunk)
                got_one.set()
                await asyncio.Event().wait()  # the engine is busy elsewhere: barge-in comes

    task = asyncio.create_task(consume())
    await got_one.wait()
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()
    assert len(received) == 1
    assert not engine()._lock.locked()
    # The library is usable again straight away.
    assert [c async for c in tts.synthesize("Okay.")]


def test_sink_returning_false_aborts_synthesis() -> None:
    calls = 0

    def sink(pcm16: bytes) -> bool:
        nonlocal calls
        calls += 1
        return False

    engine().synth(LONG, "en-us", 175, sink)
    assert calls == 1


def test_sink_error_reaches_the_caller() -> None:
    def sink(pcm16: bytes) -> bool:
        raise RuntimeError("sink broke")

    with pytest.raises(RuntimeError, match="sink broke"):
        engine().synth(SENTENCE, "en-us", 175, sink)
    assert synthesize_pcm("Still fine.")  # the library is left in a good state


def test_unknown_voice_fails_at_build() -> None:
    with pytest.raises(ConfigError, match="unknown voice"):
        build_provider("tts", EspeakBlock.model_validate({"voiceId": "xx-nope"}), {})


def test_block_fields_and_build() -> None:
    block = EspeakBlock.model_validate({"provider": "espeak", "voiceId": "en", "rate": 200})
    tts = build_provider("tts", block, {})
    assert isinstance(tts, EspeakTts)
    assert (tts.voice, tts.rate_wpm) == ("en", 200)
    assert EspeakBlock.model_validate({"provider": "espeak"}).voice_id == "en-us"
    for bad in ({"rate": 10}, {"voice": "en"}, {"voiceId": ""}):
        with pytest.raises(ValidationError):
            EspeakBlock.model_validate({"provider": "espeak", **bad})
