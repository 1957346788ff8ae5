"""The engine hands the providers' retry policy the call's hook: a retried STT open and
a retried reply stream each reach the call's ``emit`` as one ``ProviderRetried``, with
the provider, the retry number, the delay and the error. No wait is real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from callbridge.call_events import CallEvent, ProviderRetried
from callbridge.engine.events import EngineEvent, ReplyDone, ReplyKind, StartReply, SttDown
from callbridge.engine.reply import run_reply
from callbridge.engine.stt_link import SttLink
from callbridge.errors import ProviderError
from callbridge.providers.base import LlmEvent, Message, SttEvent, TextDelta, ToolSpec
from callbridge.providers.retry import record_retries


class Waits:
    def __init__(self) -> None:
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waited.append(seconds)


class QuietStream:
    def __init__(self) -> None:
        self._closed = asyncio.Event()

    def push_audio(self, ulaw: bytes) -> None:
        pass

    def finalize(self) -> None:
        pass

    async def events(self) -> AsyncIterator[SttEvent]:
        await self._closed.wait()
        return
        yield

    async def aclose(self) -> None:
        self._closed.set()


class RefusingTwice:
    name = "deepgram"

    def __init__(self) -> None:
        self.opens = 0
        self.hook: object = None
        self.connected = asyncio.Event()

    async def open_stream(self, *, on_retry: object = None) -> QuietStream:
        self.hook = on_retry  # for retries inside the stream (a per-utterance endpoint)
        self.opens += 1
        if self.opens <= 2:
            raise ProviderError("deepgram", "cannot connect: refused", retryable=True)
        self.connected.set()
        return QuietStream()


async def test_a_retried_stt_open_is_emitted_once_per_retry() -> None:
    emitted: list[CallEvent] = []
    posted: list[EngineEvent] = []
    waits = Waits()
    stt = RefusingTwice()
    link = SttLink(stt, posted.append, delays_s=(1.0, 2.0, 4.0), sleep=waits,
                   on_retry=record_retries(emitted.append))
    task = asyncio.create_task(link.run())
    await asyncio.wait_for(stt.connected.wait(), 5)
    await link.aclose()
    await asyncio.wait_for(task, 5)

    assert emitted == [
        ProviderRetried("deepgram", 1, 1.0, "deepgram: cannot connect: refused"),
        ProviderRetried("deepgram", 2, 2.0, "deepgram: cannot connect: refused"),
    ]
    assert waits.waited == [1.0, 2.0]
    assert callable(stt.hook)  # the stream gets the same hook for its own retries
    assert [type(e) for e in posted][:1] == [SttDown]  # the engine still hears it is down


class BusyOnce:
    """The model answers 429 before its first byte once, then streams."""

    name = "openai"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        self.calls += 1
        if self.calls == 1:
            raise ProviderError("openai", "HTTP 429: slow down", retryable=True)
        yield TextDelta("Sure.")


class Voice:
    name = "elevenlabs"

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        yield b"\x01" * 160


async def test_a_retried_reply_stream_is_emitted() -> None:
    emitted: list[CallEvent] = []
    posted: list[EngineEvent] = []
    waits = Waits()
    request = StartReply(1, ReplyKind.ANSWER, messages=(Message("user", "my bill?"),))
    await run_reply(request, llm=BusyOnce(), tts=Voice(), tools=(), post=posted.append,
                    retry_delays_s=(1.0, 2.0, 4.0), sleep=waits,
                    on_retry=record_retries(emitted.append))

    assert emitted == [ProviderRetried("openai", 1, 1.0, "openai: HTTP 429: slow down")]
    assert waits.waited == [1.0]
    assert posted[-1] == ReplyDone(1)
