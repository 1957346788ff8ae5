"""Deterministic stand-ins for VAD, STT, LLM and TTS with fixed delays (issue 4).

They make the load benchmark measure only callbridge's own cost, and keep its figures
comparable across versions and with other frameworks, so the defaults are part of the
contract: STT final 100 ms after the caller's speech ends, LLM first token after 80 ms
then a ~60-word reply in 10 chunks 10 ms apart, TTS first audio 60 ms after each segment
with 60 ms of a −20 dBFS 440 Hz tone per word. Select them with ``provider: fake``.

The STT judges speech by the energy of the audio it is pushed and counts time in audio
(20 ms per frame), so it needs no clock and is exactly repeatable.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from callbridge.audio import levels, ulaw
from callbridge.providers.base import (
    LlmEvent,
    Message,
    SttEvent,
    SttSpeechStarted,
    TextDelta,
    ToolSpec,
    TranscriptUpdate,
)
from callbridge.providers.registry import ProviderBlock, ProviderSpec
from callbridge.providers.retry import OnRetry

__all__ = [
    "LLM_SPEC",
    "STT_SPEC",
    "TTS_SPEC",
    "VAD_SPEC",
    "FakeLlm",
    "FakeLlmBlock",
    "FakeStt",
    "FakeSttBlock",
    "FakeSttStream",
    "FakeTts",
    "FakeTtsBlock",
    "FakeVad",
    "FakeVadBlock",
]

DEFAULT_REPLY = (
    "Thanks for calling. I can help you with your bill today. Your current balance is "
    "forty two dollars and it is due at the end of the month. You can pay by card over "
    "the phone, online in your account, or by bank transfer. Is there anything else about "
    "your bill or your plan that I can help you with right now?"
)
_RATE_HZ = 8000
_FRAME_MS = 20


class _FakeBlock(ProviderBlock):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# ---------------------------------------------------------------- VAD


class FakeVadBlock(_FakeBlock):
    provider: Literal["fake"] = "fake"
    threshold_dbfs: float = Field(-40.0, ge=-120.0, le=0.0)


class _FakeVadStream:
    def __init__(self, threshold_dbfs: float) -> None:
        self._threshold = threshold_dbfs

    def speech_probability(self, pcm16: bytes) -> float:
        return 1.0 if levels.rms_dbfs(pcm16) >= self._threshold else 0.0

    def reset(self) -> None:
        """Stateless: each frame is judged on its own."""


class FakeVad:
    """Energy threshold on one frame: cheap, so the benchmark measures the engine."""

    name = "fake"
    threshold = 0.5

    def __init__(self, threshold_dbfs: float = -40.0) -> None:
        self.threshold_dbfs = threshold_dbfs

    def new_stream(self) -> _FakeVadStream:
        return _FakeVadStream(self.threshold_dbfs)


# ---------------------------------------------------------------- STT


class FakeSttBlock(_FakeBlock):
    provider: Literal["fake"] = "fake"
    text: str = Field("I would like to check my bill", min_length=1)
    final_delay_ms: int = Field(100, ge=0, le=10_000)
    interim_after_ms: int = Field(60, ge=0, le=10_000)
    interim_every_ms: int = Field(100, ge=20, le=10_000)
    threshold_dbfs: float = Field(-40.0, ge=-120.0, le=0.0)


class FakeSttStream:
    """One call's transcription, streamed as Deepgram does: an interim with the first word
    soon after speech starts, growing by a word every ``interim_every_ms`` of the
    utterance, then one final. The growth matters: a lone first word may be a
    backchannel word ("I" of "I see"), which barge-in rightly waits out; the next
    interim decides."""

    def __init__(self, block: FakeSttBlock) -> None:
        self._text = block.text
        self._words = block.text.split()
        self._final_frames = -(-block.final_delay_ms // _FRAME_MS)
        self._interim_frames = max(1, -(-block.interim_after_ms // _FRAME_MS))
        self._interim_every = max(1, -(-block.interim_every_ms // _FRAME_MS))
        self._threshold = block.threshold_dbfs
        self._loud_codes = _loud_codes(block.threshold_dbfs)
        self._queue: asyncio.Queue[SttEvent | None] = asyncio.Queue()
        self._in_utterance = False  # speech heard and no final sent for it yet
        self._frames_since_onset = 0
        self._silent_frames = 0
        self._interim_words = 0  # words in this utterance's latest interim
        self._closed = False

    def push_audio(self, ulaw_frame: bytes) -> None:
        if self._closed:
            return
        voiced = 1 in ulaw_frame.translate(self._loud_codes)  # an int: no TypeError tried first
        if voiced:
            if not self._in_utterance:
                self._in_utterance = True
                self._frames_since_onset = 0
                self._interim_words = 0
                self._queue.put_nowait(SttSpeechStarted())
            self._silent_frames = 0
        elif self._in_utterance:
            self._silent_frames += 1
        if not self._in_utterance:
            return
        self._frames_since_onset += 1
        grown = self._frames_since_onset - self._interim_frames
        if voiced and grown >= 0 and grown % self._interim_every == 0:
            words = min(len(self._words), 1 + grown // self._interim_every)
            if words > self._interim_words:
                self._interim_words = words
                interim = " ".join(self._words[:words])
                self._queue.put_nowait(TranscriptUpdate(interim, is_final=False))
        if self._silent_frames >= max(1, self._final_frames):
            self._emit_final()

    def finalize(self) -> None:
        """Always answered, as Deepgram does: the words in hand, or an empty final
        ("nothing was said"). An unanswered Finalize reads as a stalled vendor."""
        if self._closed:
            return
        if self._in_utterance:
            self._emit_final(from_finalize=True)
        else:
            self._queue.put_nowait(TranscriptUpdate("", is_final=True, from_finalize=True))

    async def events(self) -> AsyncIterator[SttEvent]:
        while (event := await self._queue.get()) is not None:
            yield event

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    def _emit_final(self, *, from_finalize: bool = False) -> None:
        self._in_utterance = False
        self._silent_frames = 0
        self._queue.put_nowait(TranscriptUpdate(self._text, is_final=True, speech_final=True,
                                                from_finalize=from_finalize))


class FakeStt:
    name = "fake"

    def __init__(self, block: FakeSttBlock) -> None:
        self.block = block

    async def open_stream(self, *, on_retry: OnRetry | None = None) -> FakeSttStream:
        return FakeSttStream(self.block)


# ---------------------------------------------------------------- LLM


class FakeLlmBlock(_FakeBlock):
    provider: Literal["fake"] = "fake"
    reply: str = Field(DEFAULT_REPLY, min_length=1)
    first_token_ms: int = Field(80, ge=0, le=60_000)
    chunks: int = Field(10, ge=1, le=1000)
    chunk_interval_ms: int = Field(10, ge=0, le=10_000)


class FakeLlm:
    """The same reply every turn, cut into ``chunks`` pieces on word boundaries."""

    name = "fake"

    def __init__(self, block: FakeLlmBlock) -> None:
        self.block = block
        self.pieces = _split_words(block.reply, block.chunks)

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        await asyncio.sleep(self.block.first_token_ms / 1000.0)
        for i, piece in enumerate(self.pieces):
            if i:
                await asyncio.sleep(self.block.chunk_interval_ms / 1000.0)
            yield TextDelta(piece)


def _split_words(text: str, chunks: int) -> list[str]:
    """``chunks`` pieces whose concatenation is ``text`` with single spaces."""
    words = text.split()
    n = min(chunks, len(words))
    bounds = [round(i * len(words) / n) for i in range(n + 1)]
    pieces = [" ".join(words[a:b]) for a, b in itertools.pairwise(bounds)]
    return [p + " " if i < n - 1 else p for i, p in enumerate(pieces)]


# ---------------------------------------------------------------- TTS


class FakeTtsBlock(_FakeBlock):
    provider: Literal["fake"] = "fake"
    first_audio_ms: int = Field(60, ge=0, le=60_000)
    ms_per_word: int = Field(60, ge=20, le=10_000)
    tone_hz: float = Field(440.0, gt=0, lt=4000)
    level_dbfs: float = Field(-20.0, ge=-90.0, le=0.0)
    chunk_ms: int = Field(20, ge=20, le=1000)


class FakeTts:
    """A tone per word, μ-law, generated once at start-up and sliced per request."""

    name = "fake"

    def __init__(self, block: FakeTtsBlock) -> None:
        self.block = block
        # One second holds whole cycles of any integer frequency, so slicing it
        # cyclically gives a continuous tone without clicks.
        self._loop = ulaw.encode(levels.tone(block.tone_hz, 1000, block.level_dbfs, _RATE_HZ))
        self._chunk_bytes = _RATE_HZ * block.chunk_ms // 1000

    def audio_for(self, text: str) -> bytes:
        """All the audio one segment makes (words × ``ms_per_word``)."""
        n = len(text.split()) * _RATE_HZ * self.block.ms_per_word // 1000
        reps = -(-n // len(self._loop))
        return (self._loop * reps)[:n]

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        audio = self.audio_for(text)
        await asyncio.sleep(self.block.first_audio_ms / 1000.0)
        for i in range(0, len(audio), self._chunk_bytes):
            yield audio[i : i + self._chunk_bytes]
            await asyncio.sleep(0)  # let a cancel in between chunks


# ---------------------------------------------------------------- specs


def _build_vad(block: FakeVadBlock, env: Mapping[str, str]) -> FakeVad:
    return FakeVad(block.threshold_dbfs)


def _build_stt(block: FakeSttBlock, env: Mapping[str, str]) -> FakeStt:
    return FakeStt(block)


def _build_llm(block: FakeLlmBlock, env: Mapping[str, str]) -> FakeLlm:
    return FakeLlm(block)


def _build_tts(block: FakeTtsBlock, env: Mapping[str, str]) -> FakeTts:
    return FakeTts(block)


VAD_SPEC = ProviderSpec("vad", "fake", FakeVadBlock, _build_vad)
STT_SPEC = ProviderSpec("stt", "fake", FakeSttBlock, _build_stt)
LLM_SPEC = ProviderSpec("llm", "fake", FakeLlmBlock, _build_llm)
TTS_SPEC = ProviderSpec("tts", "fake", FakeTtsBlock, _build_tts)


def _loud_codes(threshold_dbfs: float) -> bytes:
    """A ``bytes.translate`` table marking the μ-law codes whose sample peaks above the
    threshold: a voiced-frame test that costs the fake almost nothing per frame."""
    peak = 32768.0 * 10.0 ** (threshold_dbfs / 20.0)
    samples = ulaw.decode(bytes(range(256)))
    return bytes(
        1 if abs(int.from_bytes(samples[2 * i : 2 * i + 2], "little", signed=True)) >= peak else 0
        for i in range(256)
    )
