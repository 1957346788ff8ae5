"""The reply pipeline: sentences reach TTS as they complete, user tools feed the model,
retryable provider failures are retried before the first byte, others fail the reply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from callbridge.engine.events import (
    EngineEvent,
    ReplyAction,
    ReplyAudio,
    ReplyDone,
    ReplyFailed,
    ReplyKind,
    ReplySegment,
    StartReply,
)
from callbridge.engine.reply import run_reply
from callbridge.errors import ProviderError
from callbridge.providers.base import LlmEvent, Message, TextDelta, ToolCall, ToolSpec


class ScriptedModel:
    """Answers each round from a list; records what it was asked."""

    name = "scripted-test"

    def __init__(self, rounds: list[list[LlmEvent] | ProviderError]) -> None:
        self.rounds = rounds
        self.asked: list[list[Message]] = []

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        self.asked.append(list(messages))
        round_ = self.rounds.pop(0)
        if isinstance(round_, ProviderError):
            raise round_
        for event in round_:
            yield event


class WordTts:
    name = "words"

    def __init__(self) -> None:
        self.spoken: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.spoken.append(text)
        for _ in text.split():
            yield b"\xff" * 160


async def _run(model: ScriptedModel, tts: WordTts, **kwargs: object) -> list[EngineEvent]:
    events: list[EngineEvent] = []
    request = StartReply(1, ReplyKind.ANSWER, messages=(Message("user", "what is my balance"),))
    await run_reply(
        request, llm=model, tts=tts, tools=(), post=events.append, **kwargs  # type: ignore[arg-type]
    )
    return events


async def test_sentences_are_spoken_in_order_and_the_reply_ends() -> None:
    model = ScriptedModel([[TextDelta("Sure thing, one "), TextDelta("moment. Your balance is"),
                            TextDelta(" forty two dollars.")]])
    tts = WordTts()
    events = await _run(model, tts)
    assert tts.spoken == ["Sure thing, one moment.", "Your balance is forty two dollars."]
    segments = [e for e in events if isinstance(e, ReplySegment)]
    assert [s.index for s in segments] == [0, 1]
    assert sum(isinstance(e, ReplyAudio) for e in events) == 10
    assert isinstance(events[-1], ReplyDone)


async def test_user_tools_run_and_the_model_goes_on_with_the_result() -> None:
    lookup = ToolCall("call_1", "get_balance", '{"account": "7"}')
    model = ScriptedModel([[TextDelta("Let me check. "), lookup],
                           [TextDelta("You owe forty two dollars.")]])
    ran: list[ToolCall] = []

    async def execute(call: ToolCall) -> str:
        ran.append(call)
        return '{"balance": 42}'

    tts = WordTts()
    events = await _run(model, tts, execute_tool=execute)
    assert ran == [lookup]
    second = model.asked[1]
    assert second[-2] == Message("assistant", "Let me check. ", tool_calls=(lookup,))
    assert second[-1] == Message("tool", '{"balance": 42}', tool_call_id="call_1")
    assert tts.spoken == ["Let me check.", "You owe forty two dollars."]
    assert isinstance(events[-1], ReplyDone)


async def test_builtin_actions_go_to_the_engine_not_to_a_tool() -> None:
    model = ScriptedModel([[TextDelta("Goodbye now."), ToolCall("c", "end_call")]])
    events = await _run(model, WordTts())
    actions = [e for e in events if isinstance(e, ReplyAction)]
    assert [a.call.name for a in actions] == ["end_call"]


async def test_a_retryable_failure_is_retried_then_succeeds() -> None:
    model = ScriptedModel([ProviderError("llm", "503", retryable=True),
                           [TextDelta("Back again, hello there.")]])
    events = await _run(model, WordTts(), retry_delays_s=(0.0, 0.0))
    assert len(model.asked) == 2
    assert isinstance(events[-1], ReplyDone)


async def test_a_fatal_failure_fails_the_reply_without_retrying() -> None:
    model = ScriptedModel([ProviderError("llm", "401 bad key", retryable=False)])
    events = await _run(model, WordTts(), retry_delays_s=(0.0, 0.0))
    assert len(model.asked) == 1
    assert isinstance(events[-1], ReplyFailed)
    assert "401" in events[-1].error
