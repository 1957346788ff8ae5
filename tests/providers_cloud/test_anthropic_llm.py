"""Anthropic Messages streaming against the local fake Messages server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fakes._h2 import Http2
from fakes.anthropic_messages import FakeAnthropic
from fakes.script import Failure, Reply, ScriptedToolCall

from callbridge.errors import ConfigError, ProviderError
from callbridge.providers.base import LlmEvent, Message, TextDelta, ToolCall, ToolSpec
from callbridge.providers.llm import anthropic as anthropic_llm
from callbridge.providers.llm.anthropic import CALL_STARTED, AnthropicChat, AnthropicConfig, build
from callbridge.providers.registry import spec_for
from callbridge.providers.retry import retry_stream
from providers_cloud.helpers import RecordingSleep, wait_for

KEY = "test-anthropic-key"
HELLO = [Message("system", "Be brief."), Message("user", "Hi")]


def make(fake: FakeAnthropic, **fields: Any) -> AnthropicChat:
    config = AnthropicConfig.model_validate({"provider": "anthropic", **fields})
    return build(config, {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.base_url})


async def collect(llm: AnthropicChat, messages: list[Message] = HELLO,
                  tools: tuple[ToolSpec, ...] = ()) -> list[LlmEvent]:
    async with asyncio.timeout(10):
        return [event async for event in llm.stream(messages, tools)]


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        build(AnthropicConfig(), {})


def test_registry_block() -> None:
    spec = spec_for("llm", "anthropic")
    block = spec.config.model_validate({"provider": "anthropic", "model": "claude-x",
                                        "systemPrompt": "You are Ada.", "maxTokens": 300})
    llm = spec.build(block, {"ANTHROPIC_API_KEY": "k"})
    assert llm.system_prompt == "You are Ada." and llm.config.max_tokens == 300


async def test_streams_text_in_order_with_system_prompt() -> None:
    async with FakeAnthropic([Reply(text=("Hello", " there."))]) as fake:
        events = await collect(make(fake, model="claude-test", temperature=0.5))
    assert events == [TextDelta("Hello"), TextDelta(" there.")]
    request = fake.requests[0]
    assert request["system"] == "Be brief."
    assert request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert (request["model"], request["max_tokens"], request["temperature"]) == (
        "claude-test", 1024, 0.5)
    assert fake.headers[0]["authorization"] == f"Bearer {KEY}"  # what SDK 2.x sends
    assert fake.headers[0]["anthropic-version"]


async def test_tool_use_blocks_become_tool_calls() -> None:
    reply = Reply(text=("Checking.",), tool_calls=(
        ScriptedToolCall("check_bill", {"account": "42"}, id="toolu_1", fragments=4),
        ScriptedToolCall("end_call", {}, id="toolu_2")))
    async with FakeAnthropic([reply]) as fake:
        tools = (ToolSpec("check_bill", "Look up", {"type": "object"}), ToolSpec("end_call", "x"))
        events = await collect(make(fake), tools=tools)
    assert events == [TextDelta("Checking."),
                      ToolCall("toolu_1", "check_bill", json.dumps({"account": "42"})),
                      ToolCall("toolu_2", "end_call", "{}")]
    assert fake.requests[0]["tools"][0] == {"name": "check_bill", "description": "Look up",
                                            "input_schema": {"type": "object"}}


async def test_maps_greeting_dtmf_and_parallel_tool_results() -> None:
    conversation = [
        Message("system", "Menu bot."),
        Message("assistant", "Hello, how can I help?"),
        Message("user", "", dtmf="3"),
        Message("assistant", "One moment.", tool_calls=(ToolCall("t1", "a", '{"x": 1}'),
                                                       ToolCall("t2", "b", "not json"))),
        Message("tool", "A done.", tool_call_id="t1"),
        Message("tool", "B done.", tool_call_id="t2"),
    ]
    async with FakeAnthropic() as fake:
        assert await collect(make(fake), conversation) == [TextDelta("OK.")]
    assert fake.requests[0]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": CALL_STARTED}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello, how can I help?"}]},
        {"role": "user", "content": [
            {"type": "text", "text": "(The caller pressed the keypad keys: 3)"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "One moment."},
            {"type": "tool_use", "id": "t1", "name": "a", "input": {"x": 1}},
            {"type": "tool_use", "id": "t2", "name": "b", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "A done."},
            {"type": "tool_result", "tool_use_id": "t2", "content": "B done."}]},
    ]


async def test_cancel_closes_the_stream() -> None:
    reply = Reply(text=tuple(f"w{i} " for i in range(50)), chunk_delay_s=0.01)
    async with FakeAnthropic([reply]) as fake:
        received: list[LlmEvent] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for event in make(fake).stream(HELLO, ()):
                received.append(event)
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        await asyncio.wait({task})
        count = len(received)
        await wait_for(lambda: fake.aborted == 1)
    assert task.cancelled() and len(received) == count < 50 and fake.completed == 0


@pytest.mark.parametrize(("failure", "retryable"), [
    (Failure(529, "Overloaded"), True), (Failure(429), True), (Failure(500), True),
    (Failure(401), False), (Failure(400, "bad"), False), (Failure(404), False),
])
async def test_http_errors(failure: Failure, retryable: bool) -> None:
    async with FakeAnthropic([failure]) as fake:
        with pytest.raises(ProviderError, match=str(failure.status)) as caught:
            await collect(make(fake))
    assert caught.value.retryable is retryable


async def test_error_event_mid_stream_is_retryable() -> None:
    async with FakeAnthropic([Reply(text=("a", "b"), error_event_after=2)]) as fake:
        with pytest.raises(ProviderError, match="overloaded") as caught:
            await collect(make(fake))
    assert caught.value.retryable


async def test_a_malformed_event_mid_stream_is_retryable() -> None:
    async with FakeAnthropic([Reply(text=("a", "b"), malformed_after=3)]) as fake:
        received: list[LlmEvent] = []
        with pytest.raises(ProviderError, match="malformed") as caught:
            async for event in make(fake).stream(HELLO, ()):
                received.append(event)
    assert caught.value.retryable and received == [TextDelta("a")]


async def test_hang_and_drop_are_retryable() -> None:
    async with FakeAnthropic([Failure(hang=True), Reply(text=("a", "b"), drop_after=3)]) as fake:
        with pytest.raises(ProviderError, match="timed out") as hung:
            await collect(make(fake, timeoutS=0.5))
        with pytest.raises(ProviderError) as dropped:
            await collect(make(fake))
    assert hung.value.retryable and dropped.value.retryable


async def test_wrong_key() -> None:
    async with FakeAnthropic(api_key="other") as fake:
        with pytest.raises(ProviderError, match="401") as caught:
            await collect(make(fake))
    assert not caught.value.retryable and KEY not in str(caught.value)


async def test_retry_stream_recovers(sleep: RecordingSleep) -> None:
    async with FakeAnthropic([Failure(529), Reply(text=("Back.",))]) as fake:
        llm = make(fake)
        events = [e async for e in retry_stream(lambda: llm.stream(HELLO, ()), sleep=sleep)]
    assert events == [TextDelta("Back.")] and sleep.delays == [1.0]


async def test_over_http2_calls_share_one_connection_and_errors_map() -> None:
    script = [Reply(text=("Hi", " there."), first_token_delay_s=0.05)] * 10 + [
        Reply(text=("a", "b"), error_event_after=2), Failure(529, "Overloaded")]
    async with FakeAnthropic(script) as fake, Http2(fake) as h2:
        config = AnthropicConfig()
        llm = anthropic_llm.chat(config, KEY, h2.base_url, prior_knowledge=True)
        results = await asyncio.gather(*(collect(llm) for _ in range(10)))
        assert all(r == [TextDelta("Hi"), TextDelta(" there.")] for r in results)
        with pytest.raises(ProviderError, match="overloaded") as failed:
            await collect(llm)
        with pytest.raises(ProviderError, match="529") as overloaded:
            await collect(llm)
        assert failed.value.retryable and overloaded.value.retryable
        assert h2.link.connections == 1


class _AnswersHtml(FakeAnthropic):
    """A proxy in the way: 200 with a page, not the event stream."""

    async def _messages(self, request: Any) -> Any:
        from starlette.responses import HTMLResponse

        return HTMLResponse("<html>Sign in to the proxy</html>")


async def test_a_body_that_is_not_an_event_stream_is_not_retryable() -> None:
    async with _AnswersHtml() as fake:
        with pytest.raises(ProviderError, match="not an event stream") as caught:
            await collect(make(fake))
    assert not caught.value.retryable
