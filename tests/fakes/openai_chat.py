"""A fake OpenAI chat-completions server (``POST /v1/chat/completions``, ``stream: true``).

Follows platform.openai.com's API reference for chat completions and the
``chat.completion.chunk`` object: Server-Sent Events ``data: {json}`` ending with
``data: [DONE]``; the first chunk carries ``delta.role``; tool calls arrive as
``delta.tool_calls[i]`` with ``index``, the first fragment carrying ``id``, ``type`` and
``function.name`` and later ones ``function.arguments`` pieces; the last chunk has
``finish_reason`` ``"tool_calls"`` or ``"stop"``; errors are
``{"error": {"message", "type", "param", "code"}}`` with the HTTP status (401, 429, 500…).
It validates what the real API rejects with 400: missing ``model``/``messages``, unknown
roles, a ``tool`` message that answers no earlier ``tool_calls`` id, malformed ``tools``.
Not modelled: non-streaming answers (400 here), ``n > 1``, logprobs, refusals, the
``usage`` chunk, response_format / structured outputs, rate-limit headers.

An idle connection stays open ``keep_alive_s`` (400 s: what api.openai.com's front,
Cloudflare, documents for HTTP/1.1 keep-alive and HTTP/2 idle), not uvicorn's 5 s, so
a client that keeps its connections between turns is measured reusing them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from fakes._http import HttpFake
from fakes.script import Failure, Reply, Script, ScriptCursor

_ROLES = {"system", "developer", "user", "assistant", "tool"}
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


_OK = Reply(text=("OK.",))


class _Dropped(Exception):
    """Raised inside the body to cut the connection the way a dying proxy does."""


class FakeOpenAI(HttpFake):
    """``base_url`` ends in ``/v1`` like the SDK's default."""

    path_prefix = "/v1"

    def __init__(
        self, replies: Script = (), *, api_key: str | None = "test-openai-key",
        default: Reply = _OK, new_connection_s: float = 0.0, keep_alive_s: float = 400.0,
    ) -> None:
        super().__init__(new_connection_s=new_connection_s)
        self.keep_alive_s = keep_alive_s
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.completed = 0  # streams that reached [DONE]
        self.aborted = 0  # streams the client walked away from
        self.models_requests = 0
        self._cursor = ScriptCursor(replies, default)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        # uvicorn reads it per connection, and none is open yet.
        assert self._server is not None
        self._server.config.timeout_keep_alive = self.keep_alive_s  # type: ignore[assignment]
        return self

    def app(self) -> ASGIApp:
        return Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])

    async def _models(self, request: Request) -> Response:
        """``GET /v1/models``: the list the key may use (clients warm connections with it)."""
        self.models_requests += 1
        if self.api_key is not None and (
            request.headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            return _error(401, "Incorrect API key provided.")
        return JSONResponse({"object": "list", "data": [
            {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
        ]})

    async def _chat(self, request: Request) -> Response:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        expected = f"Bearer {self.api_key}"
        if self.api_key is not None and request.headers.get("authorization") != expected:
            return _error(401, "Incorrect API key provided.")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        self.requests.append(body)
        problem = _invalid(body)
        if problem:
            return _error(400, problem)
        answer = self._cursor.next(body)
        if isinstance(answer, Failure):
            if answer.hang:
                await self.release.wait()
            return _error(answer.status, answer.message, answer.kind, answer.code)
        return StreamingResponse(
            self._stream(answer, str(body["model"])), media_type="text/event-stream"
        )

    async def _stream(self, reply: Reply, model: str) -> AsyncIterator[bytes]:
        finished = False
        try:
            async for data in self._events(reply, model):
                yield data
            finished = True
        finally:
            if finished:
                self.completed += 1
            else:
                self.aborted += 1

    async def _events(self, reply: Reply, model: str) -> AsyncIterator[bytes]:
        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if reply.first_token_delay_s:
            await asyncio.sleep(reply.first_token_delay_s)
        for sent, payload in enumerate(_chunks(reply)):
            if reply.drop_after is not None and sent >= reply.drop_after:
                raise _Dropped("connection cut mid-stream (scripted)")
            if reply.stall_after is not None and sent >= reply.stall_after:
                await self.release.wait()
                return
            if reply.error_event_after is not None and sent >= reply.error_event_after:
                error = {"error": {"message": "The server had an error while processing "
                                   "your request.", "type": "server_error", "param": None,
                                   "code": None}}
                yield f"data: {json.dumps(error)}\n\n".encode()
                return
            if reply.malformed_after is not None and sent >= reply.malformed_after:
                yield b'data: {"id": "chatcmpl-x", "choices": [{"delta": {"content": \n\n'
                return
            if sent and reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
            chunk = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                     "model": model, "system_fingerprint": "fp_fake", **payload}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"


def _chunks(reply: Reply) -> list[dict[str, Any]]:
    def choice(delta: Mapping[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": dict(delta), "logprobs": None,
                             "finish_reason": finish}]}

    chunks = [choice({"role": "assistant", "content": "", "refusal": None})]
    chunks += [choice({"content": text}) for text in reply.text]
    for index, call in enumerate(reply.tool_calls):
        call_id = call.id or f"call_{uuid.uuid4().hex[:24]}"
        chunks.append(choice({"tool_calls": [{
            "index": index, "id": call_id, "type": "function",
            "function": {"name": call.name, "arguments": ""}}]}))
        chunks += [choice({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                   for piece in call.pieces()]
    chunks.append(choice({}, "tool_calls" if reply.tool_calls else "stop"))
    return chunks


def _invalid(body: Any) -> str | None:
    """The 400s the real endpoint gives for a malformed request, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "you must provide a model parameter"
    if body.get("stream") is not True:
        return "this fake answers stream=true only"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    call_ids: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            return f"messages[{i}].role: invalid value {role!r}"
        for call in message.get("tool_calls") or []:
            if call.get("type") != "function" or not call.get("id") or not isinstance(
                call.get("function", {}).get("arguments"), str
            ):
                return f"messages[{i}].tool_calls: malformed tool call {call!r}"
            call_ids.add(call["id"])
        if role == "tool" and message.get("tool_call_id") not in call_ids:
            return (f"messages[{i}]: messages with role 'tool' must be a response to a "
                    "preceding message with 'tool_calls'")
        if role != "assistant" and not isinstance(message.get("content"), str):
            return f"messages[{i}].content: expected a string"
    for i, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict) or not function.get(
            "name"
        ):
            return f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': …}}}}"
    return None


def _error(
    status: int, message: str, kind: str | None = None, code: str | None = None
) -> JSONResponse:
    default_kind, default_code = _ERROR_TYPES.get(status, ("server_error", None))
    return JSONResponse(
        {"error": {"message": message, "type": kind or default_kind, "param": None,
                   "code": code or default_code}},
        status_code=status,
    )
