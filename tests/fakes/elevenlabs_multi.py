"""The ``multi-stream-input`` side of the fake ElevenLabs server: many contexts, one socket.

Follows elevenlabs.io/docs, API reference "Multi-Context WebSocket" (``GET
/v1/text-to-speech/{voice_id}/multi-stream-input``; query as ``stream-input`` plus
``inactivity_timeout``, default 20 s, at most 180): a context starts with
``{"text": " ", "context_id", "voice_settings"?}``; ``{"text", "context_id", "flush"?}``
adds text (``flush`` generates what is buffered); ``{"text": "", "context_id"}`` only
keeps the socket alive; ``{"context_id", "close_context": true}`` drops the unflushed
text, lets a generation in flight finish, then answers ``{"isFinal": true,
"contextId"}``; ``{"close_socket": true}`` ends everything. Audio answers are
``{"audio", "normalizedAlignment", "alignment", "contextId"}``. At most 5 contexts may be
open at once (an open context counts until its ``isFinal``): the sixth gets
``{"message", "error": "max_active_conversations", "code": 1008}`` and close 1008.
No message for ``inactivity_timeout`` seconds ends the socket the same way
(``input_timeout``). Not modelled: per-context timeouts, ``generation_config``,
pronunciation dictionaries, a context re-initialised under the same id.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from fakes.elevenlabs import ElevenLabsSession, FakeElevenLabs

MAX_CONTEXTS = 5
DEFAULT_CONTEXT = "default"


@dataclass
class _Context:
    id: str
    buffered: str = ""
    closing: bool = False
    jobs: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None


async def serve_multi(
    fake: FakeElevenLabs, ws: ServerConnection, session: ElevenLabsSession
) -> None:
    """One multi-context socket until the client or a failure ends it."""
    contexts: dict[str, _Context] = {}
    timeout_s = min(180.0, float(session.query.get("inactivity_timeout", "20") or 20))
    timeout_s = min(timeout_s, fake.inactivity_timeout_s)
    failed = asyncio.Event()
    try:
        while True:
            receive = asyncio.ensure_future(ws.recv())
            gone = asyncio.ensure_future(failed.wait())
            done, _ = await asyncio.wait({receive, gone}, timeout=timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if receive not in done:
                receive.cancel()
                if not failed.is_set():
                    await fail(ws, "Have not received a new text input within the timeout of "
                               f"{timeout_s:g} seconds.", "input_timeout")
                return
            raw = receive.result()
            try:
                message = json.loads(raw)
                assert isinstance(message, dict)
            except (ValueError, AssertionError):
                await fail(ws, "Could not parse input message.", "invalid_input_message")
                return
            session.messages.append(message)
            if message.get("close_socket") is True:
                for context in contexts.values():
                    context.jobs.put_nowait(None)
                workers = [c.worker for c in contexts.values() if c.worker is not None]
                if workers:
                    await asyncio.wait(workers)
                await ws.close(1000)
                return
            context_id = str(message.get("context_id") or DEFAULT_CONTEXT)
            if message.get("close_context") is True:
                context = contexts.get(context_id)
                if context is not None and not context.closing:
                    context.closing = True
                    context.buffered = ""
                    context.jobs.put_nowait(None)
                    session.contexts_closed.append(context_id)
                continue
            text = message.get("text")
            if not isinstance(text, str):
                await fail(ws, "Could not parse input message: 'text' is required.",
                           "invalid_input_message")
                return
            context = contexts.get(context_id)
            if context is None:
                if text == "":
                    continue  # a keep-alive for a context that is gone: the socket lives
                if len(contexts) >= MAX_CONTEXTS:
                    await fail(ws, f"Maximum simultaneous contexts per WebSocket connection "
                               f"exceeded ({MAX_CONTEXTS}). Please close an existing context "
                               "before opening a new one.", "max_active_conversations")
                    return
                context = _Context(context_id)
                contexts[context_id] = context
                session.contexts_opened.append(context_id)
                context.worker = asyncio.create_task(
                    _generate(fake, ws, session, context, contexts, failed))
            if context.closing:
                continue
            context.buffered += text
            if message.get("flush") and context.buffered.strip():
                context.jobs.put_nowait(context.buffered)
                context.buffered = ""
    finally:
        for context in contexts.values():
            if context.worker is not None:
                context.worker.cancel()


async def _generate(
    fake: FakeElevenLabs, ws: ServerConnection, session: ElevenLabsSession, context: _Context,
    contexts: dict[str, _Context], failed: asyncio.Event,
) -> None:
    """Speak one context's flushed texts in order; ``isFinal`` once it is closed."""
    try:
        while (text := await context.jobs.get()) is not None:
            if not await fake.speak_into(ws, session, text, context.id):
                failed.set()
                return
        await ws.send(json.dumps({"isFinal": True, "contextId": context.id}))
    except ConnectionClosed:
        pass
    finally:
        contexts.pop(context.id, None)


async def fail(ws: ServerConnection, message: str, error: str) -> None:
    await ws.send(json.dumps({"message": message, "error": error, "code": 1008}))
    await ws.close(1008, message[:120])


def audio_message(piece: str, alignment: dict[str, Any], context_id: str | None) -> str:
    body: dict[str, Any] = {"audio": piece, "normalizedAlignment": alignment,
                            "alignment": alignment}
    if context_id is None:
        body["isFinal"] = None  # stream-input's shape
    else:
        body["contextId"] = context_id
    return json.dumps(body)
