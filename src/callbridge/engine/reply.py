"""One reply, from text to audio: the model's stream is cut into sentences, and each
sentence goes to TTS as soon as it is complete while the model keeps writing.

The task reports everything as events to the call's inbox and owns no call state, so
cancelling it (barge-in) is all it takes to stop it; events it posted before it died
carry its reply id, and the engine ignores ids that are no longer current.

Faults: a stream that fails before its first byte is retried by the policy (1, 2, 4 s).
One that fails *after* it has been heard in part is resumed once: the model's answer is
asked again and continues where the broken one stopped (if it starts the same way), and
a sentence's audio is synthesised again with the bytes already played skipped. A second
failure, or any other exception, ends the reply with ``ReplyFailed`` (the engine
apologises); nothing is raised out of the task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from callbridge.engine.events import (
    EngineEvent,
    ReplyAction,
    ReplyAudio,
    ReplyDone,
    ReplyFailed,
    ReplySegment,
    StartReply,
)
from callbridge.engine.segmenter import SentenceSegmenter
from callbridge.errors import CallbridgeError, ProviderError
from callbridge.providers.base import (
    LanguageModel,
    LlmEvent,
    Message,
    TextDelta,
    TextToSpeech,
    ToolCall,
    ToolSpec,
    close_now,
)
from callbridge.providers.retry import DEFAULT_DELAYS_S, OnRetry, Sleep, retry_stream

__all__ = ["BUILTIN_ACTIONS", "MAX_TOOL_ROUNDS", "ToolExecutor", "run_reply"]

log = logging.getLogger(__name__)

BUILTIN_ACTIONS = frozenset({"end_call", "transfer_call"})
_END = object()
T = TypeVar("T")


ToolExecutor = Callable[[ToolCall], Awaitable[str]]
"""Runs a user tool the model called; returns the text the model gets back."""

MAX_TOOL_ROUNDS = 3  # a model that keeps calling tools is cut off, not looped forever


async def run_reply(
    request: StartReply,
    *,
    llm: LanguageModel,
    tts: TextToSpeech,
    tools: Sequence[ToolSpec],
    post: Callable[[EngineEvent], None],
    execute_tool: ToolExecutor | None = None,
    retry_delays_s: Sequence[float] = DEFAULT_DELAYS_S,
    sleep: Sleep = asyncio.sleep,
    on_retry: OnRetry | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """``clock`` dates the hop marks in ``request.marks`` (the engine's clock)."""
    rid = request.reply_id
    marks = _Marks(request.marks, clock)
    segments: asyncio.Queue[object] = asyncio.Queue()
    failure: str | None = None
    provider = ""
    policy = _Policy(retry_delays_s, sleep, on_retry)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_speak(rid, segments, tts, post, policy, marks))
            if request.text is not None:
                for segment in _split(request.text):
                    segments.put_nowait(segment)
            else:
                await _think(request, llm, tools, segments, post, execute_tool, policy, marks)
            segments.put_nowait(_END)
    except* CallbridgeError as group_error:
        failure = "; ".join(str(e) for e in group_error.exceptions)
        provider = next(
            (e.provider for e in group_error.exceptions if isinstance(e, ProviderError)), ""
        )
    except* Exception as group_error:
        # A provider bug must not take the call down silently: log it, then apologise.
        log.error("reply.crashed", exc_info=group_error)
        failure = "; ".join(repr(e) for e in group_error.exceptions)
    post(ReplyDone(rid) if failure is None else ReplyFailed(rid, failure, provider))


class _Marks:
    """Stamps a hop once into the reply's marks (shared with the engine's ``Reply``,
    read only when its turn is recorded): a no-op for a request that carries none."""

    __slots__ = ("_clock", "_marks")

    def __init__(self, marks: dict[str, float] | None, clock: Callable[[], float]) -> None:
        self._marks = marks
        self._clock = clock

    def first(self, name: str) -> None:
        marks = self._marks
        if marks is not None and name not in marks:
            marks[name] = self._clock()


class _Policy:
    """The retry schedule, the sleep it waits with (injectable for tests), and the hook
    that tells the call's record about each retry."""

    def __init__(
        self, delays_s: Sequence[float], sleep: Sleep, on_retry: OnRetry | None = None
    ) -> None:
        self.delays_s = tuple(delays_s)
        self.sleep = sleep
        self.on_retry = on_retry

    def stream(self, open_stream: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        return retry_stream(
            open_stream, delays_s=self.delays_s, sleep=self.sleep, on_retry=self.on_retry
        )


async def _think(
    request: StartReply,
    llm: LanguageModel,
    tools: Sequence[ToolSpec],
    segments: asyncio.Queue[object],
    post: Callable[[EngineEvent], None],
    execute_tool: ToolExecutor | None,
    policy: _Policy,
    marks: _Marks,
) -> None:
    segmenter = SentenceSegmenter()
    messages = list(request.messages)
    for _ in range(MAX_TOOL_ROUNDS):
        said: list[str] = []
        calls: list[ToolCall] = []
        marks.first("llm_sent")
        stream = _resumed_text(lambda: llm.stream(messages, tools), policy)
        try:
            async for event in stream:
                match event:
                    case TextDelta(text=text):
                        marks.first("first_token")
                        said.append(text)
                        for segment in segmenter.push(text):
                            segments.put_nowait(segment)
                    case ToolCall(name=name) if name in BUILTIN_ACTIONS:
                        post(ReplyAction(request.reply_id, event))
                    case ToolCall():
                        calls.append(event)
        finally:
            await close_now(stream)
        if not calls or execute_tool is None:
            if calls:
                log.warning("reply.tools_unavailable names=%s", [c.name for c in calls])
            break
        # The model asked for data: run its tools and let it go on with the results.
        messages.append(Message("assistant", "".join(said), tool_calls=tuple(calls)))
        for call in calls:
            messages.append(Message("tool", await execute_tool(call), tool_call_id=call.id))
    for segment in segmenter.flush():
        segments.put_nowait(segment)


async def _speak(
    rid: int,
    segments: asyncio.Queue[object],
    tts: TextToSpeech,
    post: Callable[[EngineEvent], None],
    policy: _Policy,
    marks: _Marks,
) -> None:
    index = 0
    while (segment := await segments.get()) is not _END:
        assert isinstance(segment, str)
        post(ReplySegment(rid, index, segment))
        marks.first("tts_sent")
        audio = _resumed_audio(functools.partial(tts.synthesize, segment), policy)
        try:
            async for chunk in audio:
                if chunk:
                    marks.first("tts_audio")
                    post(ReplyAudio(rid, index, chunk))
        finally:
            await close_now(audio)
        index += 1


async def _resumed_text(
    open_stream: Callable[[], AsyncIterator[LlmEvent]], policy: _Policy
) -> AsyncIterator[LlmEvent]:
    """The model's stream; if it breaks after its first text, asked once more and
    continued after the text already taken (when the new answer starts with it)."""
    said = ""
    try:
        async for event in _guarded(policy.stream(open_stream)):
            if isinstance(event, TextDelta):
                said += event.text
            yield event
        return
    except ProviderError as exc:
        if not exc.retryable or not said:
            raise  # before the first text the policy has had its go already
        log.warning("reply.llm_resume provider=%s said_chars=%d error=%s",
                    exc.provider, len(said), exc)
        broken = exc
    skip = said
    async for event in _guarded(policy.stream(open_stream)):
        if isinstance(event, TextDelta) and skip:
            head, event_text = skip[: len(event.text)], event.text[: len(skip)]
            if head != event_text:
                raise broken  # a different answer: splicing it would garble the sentence
            skip = skip[len(event_text):]
            rest = event.text[len(event_text):]
            if not rest:
                continue
            event = TextDelta(rest)
        elif isinstance(event, ToolCall) and skip:
            raise broken
        yield event


async def _resumed_audio(
    open_stream: Callable[[], AsyncIterator[bytes]], policy: _Policy
) -> AsyncIterator[bytes]:
    """A sentence's audio; if it breaks after its first byte, synthesised once more with
    the bytes already sent skipped, so the caller hears the rest of the sentence."""
    sent = 0
    try:
        async for chunk in _guarded(policy.stream(open_stream)):
            sent += len(chunk)
            yield chunk
        return
    except ProviderError as exc:
        if not exc.retryable or not sent:
            raise  # before the first byte the policy has had its go already
        log.warning("reply.tts_resume provider=%s sent_bytes=%d error=%s",
                    exc.provider, sent, exc)
    async for chunk in _guarded(policy.stream(open_stream)):
        if sent >= len(chunk):
            sent -= len(chunk)
            continue
        yield chunk[sent:]
        sent = 0


async def _guarded(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Iterate and close ``stream`` now, on failure and cancel too."""
    try:
        async for item in stream:
            yield item
    finally:
        await close_now(stream)


def _split(text: str) -> list[str]:
    segmenter = SentenceSegmenter()
    return segmenter.push(text) + segmenter.flush()
