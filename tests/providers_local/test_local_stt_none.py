"""The keyless transcriber: an empty final per finalize, nothing else, ends when closed."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.providers.base import SttEvent, TranscriptUpdate
from callbridge.providers.registry import build_provider, spec_for
from callbridge.providers.stt.none import NoneBlock, NoSpeechToText, NoSpeechToTextStream


async def _open() -> tuple[NoSpeechToTextStream, asyncio.Task[list[SttEvent]]]:
    stt = build_provider("stt", NoneBlock(), {})
    assert isinstance(stt, NoSpeechToText)
    stream = await stt.open_stream()

    async def collect() -> list[SttEvent]:
        return [event async for event in stream.events()]

    return stream, asyncio.create_task(collect())


async def test_audio_alone_produces_nothing_and_aclose_ends_events() -> None:
    stream, events = await _open()
    for _ in range(100):
        stream.push_audio(b"\xff" * 160)
    await asyncio.sleep(0)
    assert not events.done()
    await stream.aclose()
    assert await events == []


async def test_finalize_answers_with_an_empty_final_at_once() -> None:
    stream, events = await _open()
    stream.push_audio(b"\x7f" * 160)
    stream.finalize()
    stream.finalize()
    await stream.aclose()
    stream.finalize()  # after close: ignored
    await stream.aclose()  # twice: harmless
    empty = TranscriptUpdate("", is_final=True, speech_final=True)
    assert await events == [empty, empty]


def test_block_takes_no_options() -> None:
    assert spec_for("stt", "none").config is NoneBlock
    with pytest.raises(ValueError, match="Extra inputs"):
        NoneBlock.model_validate({"provider": "none", "language": "en"})
