"""OpenAI chat completions, streamed: the official SDK's client, our own request and reader.

``provider: openai`` talks to OpenAI (or ``OPENAI_BASE_URL``); ``provider:
openai-compatible`` talks to any server that speaks the same API (Groq, Ollama, vLLM,
llama.cpp, LM Studio) at the block's ``baseUrl``. The SDK's own retries are off
(``max_retries=0``): the retry policy is ours (providers/retry.py), so a failure is
counted and recorded once, not hidden inside the SDK.

The SDK still gives the auth headers, the base URL, the httpx2 client with its pool,
HTTP/2 and timeouts, and ``warm``'s request; but a turn's request is sent by
``StreamingPost`` (http_stream.py: headers and URL built once, not per request) and its
typed ``create`` is not used at all: that cost ~5 ms of CPU a request turning our
already wire-shaped messages into its TypedDicts, and a pydantic model per streamed
chunk (~100 µs). The body is read by our ``SseDecoder`` (sse.py) and each chunk by
``json.loads``; a real model sends one token per event, so that path is per token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import httpx2
import openai
from pydantic import Field

from callbridge.errors import ProviderError
from callbridge.providers.base import LlmEvent, Message, TextDelta, ToolCall, ToolSpec
from callbridge.providers.env import base_url, require_key
from callbridge.providers.llm.asyncio_net import http_transport
from callbridge.providers.llm.handoff import Handoff
from callbridge.providers.llm.http_stream import (
    HttpStatusError,
    NotAnEventStream,
    StreamingPost,
    body_message,
)
from callbridge.providers.llm.sse import SseDecoder
from callbridge.providers.llm.tools import ToolFields, Toolset, build_toolset
from callbridge.providers.registry import ProviderBlock, ProviderSpec

__all__ = [
    "COMPATIBLE_SPEC",
    "SPEC",
    "OpenAIChat",
    "OpenAICompatibleConfig",
    "OpenAIConfig",
    "to_openai_messages",
]

log = logging.getLogger(__name__)

OPENAI_DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
KEEPALIVE_S: Final = 120.0
DRAIN_S: Final = 2.0  # how long an abandoned stream may finish to keep its connection
_PLACEHOLDER_KEY: Final = "not-needed"  # self-hosted servers ignore it; the SDK wants one


class _ChatBlock(ToolFields, ProviderBlock):
    model: str = "gpt-4o-mini"
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    base_url: str | None = None
    timeout_s: float = Field(10.0, gt=0, le=120, description="connect, and between chunks")


class OpenAIConfig(_ChatBlock):
    provider: Literal["openai"] = "openai"


class OpenAICompatibleConfig(_ChatBlock):
    """``baseUrl`` is required (here or ``OPENAI_BASE_URL``); a key only if the server wants
    one, read from the variable ``apiKeyEnv`` names (e.g. ``GROQ_API_KEY``)."""

    provider: Literal["openai-compatible"] = "openai-compatible"
    model: str
    api_key_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")


class OpenAIChat:
    """A ``LanguageModel``; ``toolset`` holds the tools to offer and their executor."""

    def __init__(
        self, name: str, config: _ChatBlock, client: openai.AsyncOpenAI, toolset: Toolset,
        http: httpx2.AsyncClient,
    ) -> None:
        self.name = name
        self.config = config
        self.toolset = toolset
        self.system_prompt = config.prompt()
        self._client = client
        self._post = StreamingPost(client, http, "/chat/completions")

    async def warm(self) -> None:
        """Open (or refresh) a kept-alive connection before a turn needs it: a cheap
        ``GET /models``. A failure only means the turn pays for its own connection."""
        try:
            await self._client.models.list()
        except (openai.APIError, httpx2.TransportError) as exc:
            log.info("llm.warm_failed provider=%s error=%s", self.name, _message(exc))

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        request: dict[str, Any] = {
            "model": self.config.model,
            "messages": to_openai_messages(messages),
            "stream": True,
        }
        if tools:
            request["tools"] = [_tool_schema(spec) for spec in tools]
        if self.config.temperature is not None:
            request["temperature"] = self.config.temperature
        if self.config.max_tokens is not None:
            request["max_tokens"] = self.config.max_tokens
        # The HTTP exchange runs in its own task, so a reply cancelled mid-stream (the
        # caller went on, a barge-in) does not cut the connection: the task reads the
        # rest and the connection goes back to the pool warm. Over HTTP/1.1 a cancelled
        # read would close it, and the next turn would pay TCP + TLS again.
        chunks: Handoff[object] = Handoff()
        exchange = asyncio.get_running_loop().create_task(
            self._exchange(request, chunks), name="llm.exchange"
        )
        _exchanges.add(exchange)
        exchange.add_done_callback(_exchanges.discard)
        calls = _ToolCallAssembler()
        finished = False
        try:
            while (chunk := await chunks.get()) is not _END:
                if isinstance(chunk, ProviderError):
                    raise chunk
                assert isinstance(chunk, _Chunk)
                if chunk.text:
                    yield TextDelta(chunk.text)
                for fragment in chunk.tool_calls:
                    calls.add(fragment)
                if chunk.finished:
                    for call in calls.complete():
                        yield call
            for call in calls.complete():  # servers that never send finish_reason
                yield call
            finished = True
        finally:
            if not finished and not exchange.done():
                # Abandoned: let it drain a little, then cut it (a long answer nobody
                # hears is not worth a connection).
                asyncio.get_running_loop().call_later(DRAIN_S, exchange.cancel)

    async def _exchange(self, request: dict[str, Any], chunks: Handoff[object]) -> None:
        """One streamed request, read to its end into ``chunks`` (then ``_END``).

        Read past ``[DONE]`` to the end of the body: over HTTP/1.1 only a response read
        to its end gives its connection back to the pool."""
        try:
            response = await self._post.open(request)
        except HttpStatusError as exc:
            chunks.put(_status_error(self.name, exc))
            return
        except NotAnEventStream as exc:  # e.g. a server that ignored ``stream: true``
            chunks.put(ProviderError(self.name, f"not an event stream: {exc}",
                                     retryable=False))
            return
        except httpx2.TransportError as exc:
            chunks.put(_provider_error(self.name, exc))
            return
        try:
            decoder = SseDecoder()
            done = False
            async for data in response.chunks:
                for event in decoder.feed(data):
                    if done:
                        continue
                    if event.data.startswith("[DONE]"):
                        done = True
                        continue
                    chunks.put(_parse_chunk(self.name, event.data))
            chunks.put(_END)
        except _StreamError as exc:
            chunks.put(exc.error)
        except httpx2.TransportError as exc:
            chunks.put(_provider_error(self.name, exc))
        except Exception as exc:  # a reader that waits forever would hang the reply
            log.error("llm.stream_crashed provider=%s", self.name, exc_info=exc)
            chunks.put(ProviderError(self.name, f"stream failed: {exc!r}", retryable=True))
        finally:
            await response.aclose()


class _Chunk(NamedTuple):
    """What one ``chat.completion.chunk`` says about the first choice (a tuple: one is
    made a token)."""

    text: str
    tool_calls: list[Mapping[str, Any]]
    finished: bool


_NOTHING: Final = _Chunk("", [], False)


class _StreamError(Exception):
    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


def _parse_chunk(name: str, data: str) -> _Chunk:
    """One SSE ``data`` → ``_Chunk``; an error object or a malformed chunk ends the reply
    with a retryable ``ProviderError`` (the server failed mid-answer)."""
    try:
        chunk = json.loads(data)
        if error := chunk.get("error"):
            message = error.get("message") if isinstance(error, Mapping) else None
            text = str(message or "An error occurred during streaming")[:300]
            raise _StreamError(ProviderError(name, f"stream error: {text}", retryable=True))
        choices = chunk.get("choices")
        if not choices:
            return _NOTHING  # e.g. the usage chunk
        choice = choices[0]
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        tool_calls = delta.get("tool_calls") or []
        if not isinstance(text, str) or (tool_calls and not all(
            isinstance(call, dict) and isinstance(call.get("function") or {}, dict)
            for call in tool_calls
        )):
            raise TypeError("content or tool_calls of the wrong type")
        return _Chunk(text, tool_calls, choice.get("finish_reason") is not None)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        log.warning("llm.malformed_chunk provider=%s error=%r head=%r", name, exc, data[:80])
        raise _StreamError(
            ProviderError(name, f"malformed stream chunk: {exc!r}", retryable=True)
        ) from exc


_END: Final = object()
_exchanges: set[asyncio.Task[None]] = set()


def exchanges_in_flight() -> int:
    """HTTP exchanges still reading (an abandoned one drains for up to ``DRAIN_S``)."""
    return len(_exchanges)


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _ToolCallAssembler:
    """Joins ``delta.tool_calls`` fragments by ``index`` into complete ``ToolCall``s."""

    def __init__(self) -> None:
        self._partial: dict[int, _PartialCall] = {}

    def add(self, fragment: Mapping[str, Any]) -> None:
        partial = self._partial.setdefault(int(fragment.get("index", 0)), _PartialCall())
        if fragment.get("id"):
            partial.id = str(fragment["id"])
        function = fragment.get("function")
        if function:
            if function.get("name"):
                partial.name += str(function["name"])
            if function.get("arguments"):
                partial.arguments.append(str(function["arguments"]))

    def complete(self) -> list[ToolCall]:
        calls = [
            ToolCall(
                id=p.id or f"call_{uuid.uuid4().hex[:24]}",
                name=p.name,
                arguments="".join(p.arguments) or "{}",
            )
            for _, p in sorted(self._partial.items())
            if p.name
        ]
        self._partial.clear()
        return calls


def to_openai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """base.py messages → chat-completions messages (tool calls and results included)."""
    result: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            result.append({"role": "tool", "tool_call_id": message.tool_call_id or "",
                           "content": message.content})
        elif message.role == "assistant" and message.tool_calls:
            result.append({
                "role": "assistant",
                "content": message.content or None,
                "tool_calls": [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                    for c in message.tool_calls
                ],
            })
        else:
            result.append({"role": message.role, "content": spoken_text(message)})
    return result


def spoken_text(message: Message) -> str:
    """The text of a message; keypad input without a rendering gets one."""
    if message.content or not message.dtmf:
        return message.content
    return f"(The caller pressed the keypad keys: {' '.join(message.dtmf)})"


def _tool_schema(spec: ToolSpec) -> dict[str, Any]:
    parameters = dict(spec.parameters) or {"type": "object", "properties": {}}
    return {"type": "function",
            "function": {"name": spec.name, "description": spec.description,
                         "parameters": parameters}}


def _status_error(name: str, exc: HttpStatusError) -> ProviderError:
    """Rate limits and server errors can pass; other 4xx (and a spent quota) cannot."""
    status = exc.status
    code = _error_code(exc.body)
    retryable = (status in (408, 409, 429) or status >= 500) and code != "insufficient_quota"
    label = f"HTTP {status} {code}" if code else f"HTTP {status}"
    return ProviderError(name, f"{label}: {body_message(exc.body)}", retryable=retryable)


def _provider_error(name: str, exc: Exception) -> ProviderError:
    """Timeouts and dropped connections can pass."""
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return ProviderError(name, "timed out waiting for the model", retryable=True)
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return ProviderError(name, f"connection failed: {exc!r}", retryable=True)
    return ProviderError(name, f"stream error: {_message(exc)}", retryable=True)


def _error_code(body: object) -> str | None:
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("code") is not None:
            return str(inner["code"])
    return None


def _message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc)[:300]


def _http_client(config: _ChatBlock, *, prior_knowledge: bool = False) -> httpx2.AsyncClient:
    """One pool per process, its connections kept open between turns: the SDK's 5 s
    keep-alive would drop them between two turns of a call, and a new connection to
    the vendor (TCP + TLS) costs a turn ~150 ms.

    HTTP/1.1, as the SDK's own client speaks by default, though the vendor offers HTTP/2
    (ALPN): per streamed completion HTTP/2 costs this client more (h2's frames and
    httpcore's per-stream machinery: 7.6 M instructions a request against 6.4 M, and
    4.4–4.9 ms of CPU against 2.4 ms at 20 calls; ``bench/vendor_wire.py llm --http2``),
    and the
    lean body reader (h11_body.py) is HTTP/1.1's. Each concurrent request has its own
    connection then; ``warm`` opens the call's before its first turn, and the pool
    (pool.py) takes an idle one without asking every other, so many idle connections
    cost a request nothing (``bench/vendor_wire.py llm --idle 80``). ``prior_knowledge``
    speaks HTTP/2 over plain TCP (h2c), for a local server known to take it. The pool's
    network layer is asyncio's own (asyncio_net.py), not anyio's."""
    limits = httpx2.Limits(
        max_connections=1000, max_keepalive_connections=200, keepalive_expiry=KEEPALIVE_S
    )
    transport = http_transport(
        limits=limits, http1=not prior_knowledge, http2=prior_knowledge
    )
    return openai.DefaultAsyncHttpxClient(transport=transport, timeout=config.timeout_s)


def chat(
    name: str, config: _ChatBlock, api_key: str, url: str, *, prior_knowledge: bool = False
) -> OpenAIChat:
    """The SDK client and the streaming POST over one httpx2 client (one pool)."""
    http = _http_client(config, prior_knowledge=prior_knowledge)
    client = openai.AsyncOpenAI(
        api_key=api_key, base_url=url, max_retries=0, timeout=config.timeout_s,
        http_client=http,
    )
    return OpenAIChat(name, config, client, build_toolset(config), http)


def build(config: OpenAIConfig, env: Mapping[str, str]) -> OpenAIChat:
    key = require_key(env, "OPENAI_API_KEY", "openai")
    url = base_url(config.base_url, env, "OPENAI_BASE_URL", OPENAI_DEFAULT_BASE_URL)
    return chat("openai", config, key, url)


def build_compatible(config: OpenAICompatibleConfig, env: Mapping[str, str]) -> OpenAIChat:
    url = base_url(config.base_url, env, "OPENAI_BASE_URL", None)
    # Only the variable the block names: OPENAI_API_KEY must never reach a third party.
    key = _PLACEHOLDER_KEY
    if config.api_key_env:
        key = require_key(env, config.api_key_env, "openai-compatible")
    return chat("openai-compatible", config, key, url)


SPEC = ProviderSpec(kind="llm", name="openai", config=OpenAIConfig, build=build)
COMPATIBLE_SPEC = ProviderSpec(
    kind="llm", name="openai-compatible", config=OpenAICompatibleConfig, build=build_compatible
)
