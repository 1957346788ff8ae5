"""One reply, from text to audio: the model's stream is cut into sentences, and each
sentence goes to TTS as soon as it is complete while the model keeps writing.

The task reports everything as events to the call's inbox and owns no call state, so
cancelling it (barge-in) is all it takes to stop it; events it posted before it died
carry its reply id, and the engine ignores ids that are no longer current.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

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
from callbridge.errors import CallbridgeError
from callbridge.providers.base import (
    LanguageModel,
    Message,
    TextDelta,
    TextToSpeech,
    ToolCall,
    ToolSpec,
)
from callbridge.providers.retry import DEFAULT_DELAYS_S, retry_stream

__all__ = ["BUILTIN_ACTIONS", "MAX_TOOL_ROUNDS", "ToolExecutor", "run_reply"]

log = logging.getLogger(__name__)

BUILTIN_ACTIONS = frozenset({"end_call", "transfer_call"})
_END = object()


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
) -> None:
    rid = request.reply_id
    segments: asyncio.Queue[object] = asyncio.Queue()
    failure: str | None = None
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_speak(rid, segments, tts, post, retry_delays_s))
            if request.text is not None:
                for segment in _split(request.text):
                    segments.put_nowait(segment)
            else:
                await _think(request, llm, tools, segments, post, execute_tool, retry_delays_s)
            segments.put_nowait(_END)
    except* CallbridgeError as group_error:
        failure = "; ".join(str(e) for e in group_error.exceptions)
    except* Exception as group_error:
        # A provider bug must not take the call down silently: log it, then apologise.
        log.error("reply.crashed", exc_info=group_error)
        failure = "; ".join(repr(e) for e in group_error.exceptions)
    post(ReplyDone(rid) if failure is None else ReplyFailed(rid, failure))


async def _think(
    request: StartReply,
    llm: LanguageModel,
    tools: Sequence[ToolSpec],
    segments: asyncio.Queue[object],
    post: Callable[[EngineEvent], None],
    execute_tool: ToolExecutor | None,
    delays_s: Sequence[float],
) -> None:
    segmenter = SentenceSegmenter()
    messages = list(request.messages)
    for _ in range(MAX_TOOL_ROUNDS):
        said: list[str] = []
        calls: list[ToolCall] = []
        stream = retry_stream(lambda: llm.stream(messages, tools), delays_s=delays_s)
        try:
            async for event in stream:
                match event:
                    case TextDelta(text=text):
                        said.append(text)
                        for segment in segmenter.push(text):
                            segments.put_nowait(segment)
                    case ToolCall(name=name) if name in BUILTIN_ACTIONS:
                        post(ReplyAction(request.reply_id, event))
                    case ToolCall():
                        calls.append(event)
        finally:
            await _close(stream)
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
    delays_s: Sequence[float],
) -> None:
    index = 0
    while (segment := await segments.get()) is not _END:
        assert isinstance(segment, str)
        post(ReplySegment(rid, index, segment))
        audio = retry_stream(functools.partial(tts.synthesize, segment), delays_s=delays_s)
        try:
            async for chunk in audio:
                if chunk:
                    post(ReplyAudio(rid, index, chunk))
        finally:
            await _close(audio)
        index += 1


async def _close(stream: AsyncIterator[object]) -> None:
    """Close a provider's generator now, on cancel too: a vendor socket must not linger
    until the garbage collector gets to it."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _split(text: str) -> list[str]:
    segmenter = SentenceSegmenter()
    return segmenter.push(text) + segmenter.flush()
