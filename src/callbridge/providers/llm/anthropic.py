"""Anthropic Messages, streamed, through the official SDK; same contract as openai.py.

The system prompt goes to ``system``; tool calls come back as ``tool_use`` content blocks
whose ``input_json_delta`` pieces are joined into a ``ToolCall`` at ``content_block_stop``;
tool results go back as ``tool_result`` blocks in a user message. The SDK's retries are
off: the retry policy is ours.

As in openai.py, the SDK gives the auth headers (``x-api-key``, ``anthropic-version``),
the base URL and the httpx2 client (pool, HTTP/2, timeouts); the request goes out
through ``StreamingPost`` (built once) and the events are read by ``SseDecoder`` and
``json.loads``: the typed ``create`` would transform the request into TypedDicts and
build a pydantic model per event, the bulk of the client's CPU per turn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final, Literal

import anthropic
import httpx2
from pydantic import Field

from callbridge.errors import ProviderError
from callbridge.providers.base import LlmEvent, Message, TextDelta, ToolCall, ToolSpec
from callbridge.providers.env import base_url, require_key
from callbridge.providers.llm.asyncio_net import http_transport
from callbridge.providers.llm.http_stream import (
    HttpStatusError,
    NotAnEventStream,
    StreamingPost,
    body_message,
)
from callbridge.providers.llm.openai import KEEPALIVE_S, spoken_text
from callbridge.providers.llm.sse import SseDecoder
from callbridge.providers.llm.tools import ToolFields, Toolset, build_toolset
from callbridge.providers.registry import ProviderBlock, ProviderSpec

__all__ = ["SPEC", "AnthropicChat", "AnthropicConfig", "to_anthropic_messages"]

log = logging.getLogger(__name__)

NAME: Final = "anthropic"
DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
# The API wants the conversation to open with the user; a call opens with our greeting.
CALL_STARTED: Final = "(The phone call has started.)"
_RETRYABLE_TYPES: Final = frozenset({"overloaded_error", "api_error", "rate_limit_error",
                                     "timeout_error"})
_FATAL_TYPES: Final = frozenset({"invalid_request_error", "authentication_error",
                                 "permission_error", "not_found_error", "request_too_large",
                                 "billing_error"})


class AnthropicConfig(ToolFields, ProviderBlock):
    provider: Literal["anthropic"] = "anthropic"
    model: str = "claude-haiku-4-5"
    temperature: float | None = Field(None, ge=0, le=1)
    max_tokens: int = Field(1024, ge=1, le=32768)
    base_url: str | None = None
    timeout_s: float = Field(10.0, gt=0, le=120, description="connect, and between events")


class AnthropicChat:
    """A ``LanguageModel``; ``toolset`` holds the tools to offer and their executor."""

    name = NAME

    def __init__(
        self, config: AnthropicConfig, client: anthropic.AsyncAnthropic, toolset: Toolset,
        http: httpx2.AsyncClient,
    ) -> None:
        self.config = config
        self.toolset = toolset
        self.system_prompt = config.prompt()
        self._client = client
        self._post = StreamingPost(client, http, "/v1/messages")

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        system, turns = to_anthropic_messages(messages)
        request: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "messages": turns,
            "stream": True,
        }
        if system:
            request["system"] = system
        if tools:
            request["tools"] = [_tool_schema(spec) for spec in tools]
        if self.config.temperature is not None:
            request["temperature"] = self.config.temperature
        try:
            response = await self._post.open(request)
        except HttpStatusError as exc:
            raise _status_error(exc) from exc
        except NotAnEventStream as exc:  # a proxy's page instead of the stream: no retry
            raise ProviderError(NAME, f"not an event stream: {exc}", retryable=False) from exc
        except httpx2.TransportError as exc:
            raise _provider_error(exc) from exc
        tool_blocks: dict[int, tuple[str, str, list[str]]] = {}
        decoder = SseDecoder()
        try:
            async for data in response.chunks:
                for sse in decoder.feed(data):
                    if sse.data and (out := _on_event(_parse_event(sse.event, sse.data),
                                                      tool_blocks)) is not None:
                        yield out
        except (KeyError, TypeError, AttributeError) as exc:
            log.warning("llm.malformed_event provider=%s error=%r", NAME, exc)
            raise ProviderError(NAME, f"malformed stream event: {exc!r}", retryable=True) from exc
        except httpx2.TransportError as exc:
            raise _provider_error(exc) from exc
        finally:
            await response.aclose()


def _on_event(
    event: Mapping[str, Any], tool_blocks: dict[int, tuple[str, str, list[str]]]
) -> LlmEvent | None:
    """Text deltas out at once; a ``tool_use`` block's JSON pieces kept until its stop."""
    kind = event.get("type")
    if kind == "content_block_delta":
        delta = event["delta"]
        if delta.get("type") == "text_delta" and delta.get("text"):
            return TextDelta(str(delta["text"]))
        if delta.get("type") == "input_json_delta" and event["index"] in tool_blocks:
            tool_blocks[event["index"]][2].append(str(delta["partial_json"]))
    elif kind == "content_block_start":
        block = event["content_block"]
        if block.get("type") == "tool_use":
            tool_blocks[event["index"]] = (str(block["id"]), str(block["name"]), [])
    elif kind == "content_block_stop" and event.get("index") in tool_blocks:
        call_id, name, pieces = tool_blocks.pop(event["index"])
        return ToolCall(call_id, name, "".join(pieces) or "{}")
    return None


def _parse_event(name: str, data: str) -> Mapping[str, Any]:
    """One SSE event's JSON; an ``error`` event (the server failed mid-answer, e.g.
    ``overloaded_error``) or JSON that is not an object raises ``ProviderError``."""
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise ProviderError(NAME, f"malformed stream event: {exc!r}", retryable=True) from exc
    if not isinstance(event, dict):
        raise ProviderError(NAME, f"malformed stream event: {data[:80]!r}", retryable=True)
    if name == "error" or event.get("type") == "error":
        kind = _error_type(event)
        inner = event.get("error")
        message = str(inner.get("message") if isinstance(inner, Mapping) else data)[:300]
        raise ProviderError(NAME, f"stream error {kind or ''}: {message}",
                            retryable=kind not in _FATAL_TYPES)
    return event


def to_anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """base.py messages → ``(system, messages)``; same-role neighbours are merged, so the
    results of parallel tool calls share one user message as the API requires."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role, blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": CALL_STARTED}]})
    return system, turns


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        return "user", [{"type": "tool_result", "tool_use_id": message.tool_call_id or "",
                         "content": message.content}]
    text = spoken_text(message)
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    if message.role == "assistant":
        blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)}
                   for c in message.tool_calls]
    return message.role, blocks


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool_schema(spec: ToolSpec) -> dict[str, Any]:
    schema = dict(spec.parameters) or {"type": "object", "properties": {}}
    return {"name": spec.name, "description": spec.description, "input_schema": schema}


def _status_error(exc: HttpStatusError) -> ProviderError:
    """Overloaded (529), rate limits and 5xx can pass; other 4xx cannot."""
    kind = _error_type(exc.body)
    status = exc.status
    retryable = kind in _RETRYABLE_TYPES or status in (408, 409, 429) or status >= 500
    label = f"HTTP {status} {kind}" if kind else f"HTTP {status}"
    return ProviderError(NAME, f"{label}: {body_message(exc.body)}", retryable=retryable)


def _provider_error(exc: Exception) -> ProviderError:
    """Timeouts and dropped connections can pass."""
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return ProviderError(NAME, "timed out waiting for the model", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return ProviderError(NAME, f"connection failed: {exc!r}", retryable=True)
    return ProviderError(NAME, f"stream error: {_message(exc)}", retryable=True)


def _error_type(body: object) -> str | None:
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("type"):
            return str(inner["type"])
    return None


def _message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc)[:300]


def chat(
    config: AnthropicConfig, api_key: str, url: str, *, prior_knowledge: bool = False
) -> AnthropicChat:
    """Connections kept open between turns (the SDK's 5 s keep-alive would drop them: a
    new one to the vendor costs a turn TCP + TLS), over HTTP/2 where the server offers
    it, one for every call (see openai.py ``_http_client``); the SDK client and the
    streaming POST share that one pool."""
    limits = httpx2.Limits(
        max_connections=1000, max_keepalive_connections=200, keepalive_expiry=KEEPALIVE_S
    )
    transport = http_transport(limits=limits, http1=not prior_knowledge, http2=True)
    http = anthropic.DefaultAsyncHttpxClient(transport=transport, timeout=config.timeout_s)
    client = anthropic.AsyncAnthropic(
        api_key=api_key, base_url=url, max_retries=0, timeout=config.timeout_s,
        http_client=http,
    )
    return AnthropicChat(config, client, build_toolset(config), http)


def build(config: AnthropicConfig, env: Mapping[str, str]) -> AnthropicChat:
    key = require_key(env, "ANTHROPIC_API_KEY", NAME)
    url = base_url(config.base_url, env, "ANTHROPIC_BASE_URL", DEFAULT_BASE_URL)
    return chat(config, key, url)


SPEC = ProviderSpec(kind="llm", name=NAME, config=AnthropicConfig, build=build)
