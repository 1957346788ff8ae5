"""A reply whose provider fails after its first byte: the rest of the sentence is tried
once more (the caller hears it whole), a second failure fails the reply with the
provider named, and no retry ever waits for real (the sleep is injected)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from callbridge.engine.events import (
    EngineEvent,
    ReplyAudio,
    ReplyDone,
    ReplyFailed,
    ReplyKind,
    StartReply,
)
from callbridge.engine.reply import run_reply
from callbridge.errors import ProviderError
from callbridge.providers.base import LlmEvent, Message, TextDelta, ToolSpec

DROP = ProviderError("elevenlabs", "closed the stream: code 1011", retryable=True)


class Model:
    """Streams ``text`` in pieces; the first ``breaks`` streams die after ``die_after``."""

    name = "openai"

    def __init__(self, pieces: list[str], *, breaks: int = 0, die_after: int = 1,
                 second: list[str] | None = None) -> None:
        self.pieces, self.breaks, self.die_after = pieces, breaks, die_after
        self.second = second
        self.calls = 0

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        self.calls += 1
        pieces = self.second if self.second is not None and self.calls > 1 else self.pieces
        for n, piece in enumerate(pieces):
            if self.breaks and n == self.die_after:
                self.breaks -= 1
                raise ProviderError("openai", "stream error: connection reset", retryable=True)
            yield TextDelta(piece)


class Tts:
    """Deterministic audio: one distinct 160-byte chunk per word; may break mid-sentence."""

    name = "elevenlabs"

    def __init__(self, *, breaks: int = 0, die_after: int = 2) -> None:
        self.breaks, self.die_after = breaks, die_after
        self.asked: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.asked.append(text)
        for n, _ in enumerate(text.split()):
            if self.breaks and n == self.die_after:
                self.breaks -= 1
                raise DROP
            yield bytes([n + 1]) * 160


async def _run(model: Model, tts: Tts) -> list[EngineEvent]:
    events: list[EngineEvent] = []
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    request = StartReply(1, ReplyKind.ANSWER, messages=(Message("user", "my bill?"),))
    await run_reply(request, llm=model, tts=tts, tools=(), post=events.append,
                    retry_delays_s=(1.0, 2.0, 4.0), sleep=sleep)
    assert waited == []  # a resume is at once: the caller is listening mid-sentence
    return events


def _audio(events: list[EngineEvent]) -> bytes:
    return b"".join(e.ulaw for e in events if isinstance(e, ReplyAudio))


async def test_tts_breaking_mid_sentence_resumes_the_rest_of_it_once() -> None:
    tts = Tts(breaks=1, die_after=2)
    events = await _run(Model(["Your bill is forty two dollars."]), tts)
    assert isinstance(events[-1], ReplyDone)
    # Every word exactly once, in order: the re-synthesis skipped the two already sent.
    assert _audio(events) == b"".join(bytes([n]) * 160 for n in range(1, 7))
    assert tts.asked == ["Your bill is forty two dollars."] * 2


async def test_tts_breaking_twice_fails_the_reply_naming_the_provider() -> None:
    events = await _run(Model(["Your bill is forty two dollars."]), Tts(breaks=2))
    failed = events[-1]
    assert isinstance(failed, ReplyFailed)
    assert failed.provider == "elevenlabs" and "1011" in failed.error


async def test_the_model_breaking_after_its_first_text_is_continued_where_it_stopped() -> None:
    model = Model(["Your bill ", "is forty ", "two dollars."], breaks=1, die_after=2)
    tts = Tts()
    events = await _run(model, tts)
    assert isinstance(events[-1], ReplyDone)
    assert tts.asked == ["Your bill is forty two dollars."]
    assert model.calls == 2


async def test_a_different_second_answer_is_not_spliced_on() -> None:
    model = Model(["Your bill ", "is forty ", "two dollars."], breaks=1, die_after=2,
                  second=["Sorry, let me ", "check that."])
    tts = Tts()
    events = await _run(model, tts)
    failed = events[-1]
    assert isinstance(failed, ReplyFailed) and failed.provider == "openai"
    assert tts.asked == []  # no half sentence was spoken


async def test_a_failure_before_the_first_byte_is_not_resumed_after_the_policy() -> None:
    model = Model(["Your bill."], breaks=9, die_after=0)
    events: list[EngineEvent] = []
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    request = StartReply(1, ReplyKind.ANSWER, messages=(Message("user", "my bill?"),))
    await run_reply(request, llm=model, tts=Tts(), tools=(), post=events.append,
                    retry_delays_s=(1.0, 2.0), sleep=sleep)
    assert isinstance(events[-1], ReplyFailed)
    assert model.calls == 3 and waited == [1.0, 2.0]  # the policy, once
