"""One reply, from text to audio: the model's stream is cut into sentences, and each
sentence goes to TTS as soon as it is complete while the model keeps writing.

The task reports everything as events to the call's inbox and owns no call state, so
cancelling it (barge-in) is all it takes to stop it; events it posted before it died
carry its reply id, and the engine ignores ids that are no longer current.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence

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
from callbridge.providers.base import LanguageModel, TextDelta, TextToSpeech, ToolCall, ToolSpec

__all__ = ["BUILTIN_ACTIONS", "run_reply"]

log = logging.getLogger(__name__)

BUILTIN_ACTIONS = frozenset({"end_call", "transfer_call"})
_END = object()


async def run_reply(
    request: StartReply,
    *,
    llm: LanguageModel,
    tts: TextToSpeech,
    tools: Sequence[ToolSpec],
    post: Callable[[EngineEvent], None],
) -> None:
    rid = request.reply_id
    segments: asyncio.Queue[object] = asyncio.Queue()
    failure: str | None = None
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_speak(rid, segments, tts, post))
            if request.text is not None:
                for segment in _split(request.text):
                    segments.put_nowait(segment)
            else:
                await _think(request, llm, tools, segments, post)
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
) -> None:
    segmenter = SentenceSegmenter()
    stream = llm.stream(request.messages, tools)
    try:
        async for event in stream:
            match event:
                case TextDelta(text=text):
                    for segment in segmenter.push(text):
                        segments.put_nowait(segment)
                case ToolCall(name=name) if name in BUILTIN_ACTIONS:
                    post(ReplyAction(request.reply_id, event))
                case ToolCall(name=name):
                    log.warning("reply.tool_unhandled name=%s", name)
    finally:
        await _close(stream)
    for segment in segmenter.flush():
        segments.put_nowait(segment)


async def _speak(
    rid: int,
    segments: asyncio.Queue[object],
    tts: TextToSpeech,
    post: Callable[[EngineEvent], None],
) -> None:
    index = 0
    while (segment := await segments.get()) is not _END:
        assert isinstance(segment, str)
        post(ReplySegment(rid, index, segment))
        audio = tts.synthesize(segment)
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
