"""The keyless transcriber: it hears nothing, for assistants driven by the keypad.

Audio is discarded. On ``finalize`` it answers at once with an empty final transcript,
so the engine closes the caller's turn without waiting out its STT timeout, and the
model sees a user turn with no words (the scripted agent's ``noSpeechReply``). It never
sends interim text, so barge-in falls back to VAD alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Literal

from callbridge.providers.base import SttEvent, TranscriptUpdate
from callbridge.providers.registry import ProviderBlock, ProviderSpec
from callbridge.providers.retry import OnRetry

__all__ = ["SPEC", "NoSpeechToText", "NoSpeechToTextStream", "NoneBlock"]


class NoneBlock(ProviderBlock):
    """``transcriber: {provider: none}``."""

    provider: Literal["none"] = "none"


class NoSpeechToText:
    name = "none"

    async def open_stream(self, *, on_retry: OnRetry | None = None) -> NoSpeechToTextStream:
        return NoSpeechToTextStream()


class NoSpeechToTextStream:
    """``events()`` yields one empty final per ``finalize`` and ends when closed."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[SttEvent | None] = asyncio.Queue()
        self._closed = False

    def push_audio(self, ulaw: bytes) -> None:
        """Dropped: there is nothing to transcribe with."""

    def finalize(self) -> None:
        if not self._closed:
            self._events.put_nowait(TranscriptUpdate("", is_final=True, speech_final=True))

    async def events(self) -> AsyncGenerator[SttEvent, None]:
        while (event := await self._events.get()) is not None:
            yield event

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._events.put_nowait(None)


def _build(block: NoneBlock, env: Mapping[str, str]) -> NoSpeechToText:
    return NoSpeechToText()


SPEC = ProviderSpec(kind="stt", name="none", config=NoneBlock, build=_build)
