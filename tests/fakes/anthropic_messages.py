"""A fake Anthropic Messages server (``POST /v1/messages`` with ``stream: true``).

Follows docs.anthropic.com "Messages" and "Streaming Messages": headers ``x-api-key`` (or
``Authorization: Bearer``, which the official SDK 2.x sends) and ``anthropic-version``;
SSE ``event: NAME`` / ``data: {json}`` pairs in the order
``message_start``, then per content block ``content_block_start`` (``text`` or
``tool_use`` with ``id``/``name``/``input: {}``), ``content_block_delta`` (``text_delta`` or
``input_json_delta.partial_json``), ``content_block_stop``; a ``ping``; ``message_delta``
with ``stop_reason`` (``end_turn`` / ``tool_use``) and ``usage``; ``message_stop``. Errors
are ``{"type": "error", "error": {"type", "message"}}`` with 400/401/403/404/429/500/529,
or an ``event: error`` inside the stream. It rejects (400) what the API rejects: no
``max_tokens``, roles other than user/assistant, a first message that is not the user's, a
``tool_result`` that answers no ``tool_use`` of the previous assistant turn, a ``tool_use``
left unanswered, empty text blocks.
Not modelled: non-streaming answers, thinking blocks, citations, prompt caching, images,
``stop_sequences``, token counting, rate-limit headers.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from fakes._http import HttpFake
from fakes.script import Failure, Reply, Script, ScriptCursor

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
_OK = Reply(text=("OK.",))


class _Dropped(Exception):
    """Raised inside the body to cut the connection mid-stream."""


class FakeAnthropic(HttpFake):
    """``base_url`` is the host root, like the SDK's ``https://api.anthropic.com``."""

    def __init__(
        self, replies: Script = (), *, api_key: str = "test-anthropic-key", default: Reply = _OK
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.completed = 0
        self.aborted = 0
        self._cursor = ScriptCursor(replies, default)

    def app(self) -> ASGIApp:
        return Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    async def _messages(self, request: Request) -> Response:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        # The docs name ``x-api-key``; the official SDK (2.x) sends ``Authorization: Bearer``.
        # The API takes either, so the fake does too.
        offered = {request.headers.get("x-api-key"),
                   request.headers.get("authorization", "").removeprefix("Bearer ")}
        if self.api_key not in offered:
            return _error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "request body is not valid JSON")
        self.requests.append(body)
        problem = _invalid(body)
        if problem:
            return _error(400, problem)
        answer = self._cursor.next(body)
        if isinstance(answer, Failure):
            if answer.hang:
                await self.release.wait()
            return _error(answer.status, answer.message, answer.kind)
        return StreamingResponse(self._stream(answer, body), media_type="text/event-stream")

    async def _stream(self, reply: Reply, body: dict[str, Any]) -> AsyncIterator[bytes]:
        finished = False
        try:
            async for data in self._events(reply, body):
                yield data
            finished = True
        finally:
            if finished:
                self.completed += 1
            else:
                self.aborted += 1

    async def _events(self, reply: Reply, body: dict[str, Any]) -> AsyncIterator[bytes]:
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        yield _sse("message_start", {"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "content": [],
            "model": body["model"], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 25, "output_tokens": 1}}})
        if reply.first_token_delay_s:
            await asyncio.sleep(reply.first_token_delay_s)
        for sent, (name, data) in enumerate(_body_events(reply)):
            if reply.drop_after is not None and sent >= reply.drop_after:
                raise _Dropped("connection cut mid-stream (scripted)")
            if reply.stall_after is not None and sent >= reply.stall_after:
                await self.release.wait()
                return
            if reply.error_event_after is not None and sent >= reply.error_event_after:
                yield _sse("error", {"type": "error", "error": {
                    "type": "overloaded_error", "message": "Overloaded"}})
                return
            if reply.malformed_after is not None and sent >= reply.malformed_after:
                yield b'event: content_block_delta\ndata: {"type": "content_block_delta", \n\n'
                return
            if sent and reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
            yield _sse(name, data)


def _body_events(reply: Reply) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    index = 0
    if reply.text:
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
        events.append(("ping", {"type": "ping"}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": t}})
                   for t in reply.text]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    for offset, call in enumerate(reply.tool_calls):
        i = index + offset
        call_id = call.id or f"toolu_{uuid.uuid4().hex[:24]}"
        events.append(("content_block_start", {"type": "content_block_start", "index": i,
                       "content_block": {"type": "tool_use", "id": call_id, "name": call.name,
                                         "input": {}}}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": i,
                    "delta": {"type": "input_json_delta", "partial_json": piece}})
                   for piece in call.pieces()]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    stop = "tool_use" if reply.tool_calls else "end_turn"
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": 15}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _invalid(body: Any) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if body.get("stream") is not True:
        return "this fake answers stream=true only"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string or list"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if messages[0].get("role") != "user":
        return "messages: first message must use the \"user\" role"
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            return f"messages.{i}.content: must be a string or a non-empty list"
        answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if role == "user" and answered != open_calls:
            return (f"messages.{i}: tool_use ids {sorted(open_calls)} need tool_result blocks "
                    "immediately after, and every tool_result needs a tool_use before it")
        for block in blocks:
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{i}: text content blocks must be non-empty"
        open_calls = ({b.get("id") for b in blocks if b.get("type") == "tool_use"}
                      if role == "assistant" else set())
    for i, tool in enumerate(body.get("tools") or []):
        if not tool.get("name") or not isinstance(tool.get("input_schema"), dict):
            return f"tools.{i}: name and input_schema are required"
    return None


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _error(status: int, message: str, kind: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": kind or _ERROR_TYPES.get(status, "api_error"),
                                    "message": message}},
        status_code=status,
    )
