"""OpenAI / OpenAI-compatible chat streaming against the local fake chat-completions server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fakes._h2 import Http2
from fakes.openai_chat import FakeOpenAI
from fakes.script import Failure, Reply, ScriptedToolCall

from callbridge.errors import ConfigError, ProviderError
from callbridge.providers.base import LlmEvent, Message, TextDelta, ToolCall, ToolSpec
from callbridge.providers.llm import openai as openai_llm
from callbridge.providers.llm.openai import (
    OpenAIChat,
    OpenAICompatibleConfig,
    OpenAIConfig,
    build,
    build_compatible,
)
from callbridge.providers.registry import spec_for
from callbridge.providers.retry import retry_stream
from providers_cloud.helpers import RecordingSleep, wait_for

KEY = "test-openai-key"
HELLO = [Message("system", "Be brief."), Message("user", "Hi")]


def make(fake: FakeOpenAI, **fields: Any) -> OpenAIChat:
    config = OpenAIConfig.model_validate({"provider": "openai", **fields})
    return build(config, {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url})


async def collect(llm: OpenAIChat, messages: list[Message] = HELLO,
                  tools: tuple[ToolSpec, ...] = ()) -> list[LlmEvent]:
    async with asyncio.timeout(10):
        return [event async for event in llm.stream(messages, tools)]


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build(OpenAIConfig(), {})


def test_compatible_needs_a_base_url_but_no_key() -> None:
    config = OpenAICompatibleConfig.model_validate(
        {"provider": "openai-compatible", "model": "llama3"})
    with pytest.raises(ConfigError, match="baseUrl"):
        build_compatible(config, {"OPENAI_API_KEY": "sk-secret"})
    llm = build_compatible(config, {"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert llm.name == "openai-compatible"


def test_compatible_reads_only_the_key_variable_it_names() -> None:
    config = OpenAICompatibleConfig.model_validate(
        {"provider": "openai-compatible", "model": "llama3", "baseUrl": "http://h/v1",
         "apiKeyEnv": "GROQ_API_KEY"}
    )
    with pytest.raises(ConfigError, match="GROQ_API_KEY"):
        build_compatible(config, {"OPENAI_API_KEY": "sk-secret"})


def test_registry_validates_vapi_style_block() -> None:
    spec = spec_for("llm", "openai")
    block = spec.config.model_validate({
        "provider": "openai", "model": "gpt-4o", "temperature": 0.3, "maxTokens": 200,
        "messages": [{"role": "system", "content": "You are Ada."}],
        "transferNumber": "+15550100", "endCallFunctionEnabled": True,
        "tools": [{"name": "check_bill", "description": "Look up a bill", "url": "http://t/x",
                   "parameters": {"type": "object",
                                  "properties": {"account": {"type": "string"}}}}],
    })
    llm = spec.build(block, {"OPENAI_API_KEY": "k"})
    assert llm.system_prompt == "You are Ada."
    assert [s.name for s in llm.toolset.specs] == ["end_call", "transfer_call", "check_bill"]
    with pytest.raises(ValueError, match="built-in"):
        spec.config.model_validate({"provider": "openai",
                                    "tools": [{"name": "end_call", "url": "http://t"}]})


async def test_streams_text_deltas_in_order() -> None:
    async with FakeOpenAI([Reply(text=("Hello", " there", ". How can I help?"))]) as fake:
        events = await collect(make(fake, model="gpt-4o", temperature=0.2))
    assert events == [TextDelta("Hello"), TextDelta(" there"), TextDelta(". How can I help?")]
    request = fake.requests[0]
    assert request["model"] == "gpt-4o" and request["stream"] is True
    assert request["temperature"] == 0.2
    assert request["messages"] == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Hi"}]
    assert "tools" not in request
    assert fake.headers[0]["authorization"] == f"Bearer {KEY}"


async def test_assembles_fragmented_tool_calls_after_the_text() -> None:
    reply = Reply(
        text=("Let me check.",),
        tool_calls=(
            ScriptedToolCall("check_bill", {"account": "12345", "month": "May"}, id="call_a",
                             fragments=5),
            ScriptedToolCall("end_call", {}, id="call_b"),
        ),
    )
    async with FakeOpenAI([reply]) as fake:
        tools = (ToolSpec("check_bill", "Look up", {"type": "object", "properties": {}}),
                 ToolSpec("end_call", "Hang up"))
        events = await collect(make(fake), tools=tools)
    assert events == [
        TextDelta("Let me check."),
        ToolCall("call_a", "check_bill", json.dumps({"account": "12345", "month": "May"})),
        ToolCall("call_b", "end_call", "{}"),
    ]
    assert [t["function"]["name"] for t in fake.requests[0]["tools"]] == ["check_bill", "end_call"]
    assert fake.requests[0]["tools"][1]["function"]["parameters"] == {
        "type": "object", "properties": {}}


async def test_maps_dtmf_tool_calls_and_results_to_api_messages() -> None:
    conversation = [
        Message("system", "Menu bot."),
        Message("user", "", dtmf="12"),
        Message("assistant", "", tool_calls=(ToolCall("call_1", "check_bill", '{"a":1}'),)),
        Message("tool", "Your bill is $20.", tool_call_id="call_1"),
        Message("assistant", "Your bill is twenty dollars."),
        Message("user", "Thanks", dtmf="#"),
    ]
    async with FakeOpenAI() as fake:
        events = await collect(make(fake), conversation)
    assert events == [TextDelta("OK.")]  # the fake accepted the shapes (it 400s otherwise)
    assert fake.requests[0]["messages"] == [
        {"role": "system", "content": "Menu bot."},
        {"role": "user", "content": "(The caller pressed the keypad keys: 1 2)"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "check_bill", "arguments": '{"a":1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Your bill is $20."},
        {"role": "assistant", "content": "Your bill is twenty dollars."},
        {"role": "user", "content": "Thanks"},
    ]


async def _cancel_after_first(llm: OpenAIChat) -> tuple[asyncio.Task[None], list[LlmEvent], int]:
    received: list[LlmEvent] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for event in llm.stream(HELLO, ()):
            received.append(event)
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    await asyncio.wait({task})
    return task, received, len(received)


async def test_a_cancelled_stream_stops_at_once_and_its_connection_stays_warm() -> None:
    reply = Reply(text=tuple(f"w{i} " for i in range(50)), chunk_delay_s=0.01)
    async with FakeOpenAI([reply, Reply(text=("Next.",))], new_connection_s=0.02) as fake:
        llm = make(fake)
        task, received, count = await _cancel_after_first(llm)
        assert task.cancelled()
        assert 1 <= count < 50
        # The rest is read in the background (the caller hears none of it) …
        await wait_for(lambda: fake.completed == 1 and openai_llm.exchanges_in_flight() == 0)
        assert len(received) == count
        # … so the next turn rides the same connection instead of paying for a new one.
        assert await collect(llm) == [TextDelta("Next.")]
        assert fake.link is not None and fake.link.connections == 1
    assert fake.aborted == 0


async def test_an_abandoned_long_stream_is_cut_after_the_drain_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(openai_llm, "DRAIN_S", 0.1)
    reply = Reply(text=tuple(f"w{i} " for i in range(500)), chunk_delay_s=0.01)
    async with FakeOpenAI([reply]) as fake:
        task, received, count = await _cancel_after_first(make(fake))
        await wait_for(lambda: fake.aborted == 1)
    assert task.cancelled() and len(received) == count
    assert fake.completed == 0


@pytest.mark.parametrize(
    ("failure", "retryable"),
    [
        (Failure(429, "Rate limit reached"), True),
        (Failure(429, "You exceeded your current quota", kind="insufficient_quota",
                 code="insufficient_quota"), False),
        (Failure(500), True),
        (Failure(503), True),
        (Failure(401, "Incorrect API key"), False),
        (Failure(400, "Invalid 'messages'"), False),
        (Failure(404, "The model does not exist"), False),
    ],
)
async def test_http_errors_map_to_provider_errors(failure: Failure, retryable: bool) -> None:
    async with FakeOpenAI([failure]) as fake:
        with pytest.raises(ProviderError) as caught:
            await collect(make(fake))
    assert caught.value.retryable is retryable
    assert str(failure.status) in str(caught.value)


async def test_wrong_key_is_refused() -> None:
    async with FakeOpenAI(api_key="another") as fake:
        with pytest.raises(ProviderError, match="401") as caught:
            await collect(make(fake))
    assert not caught.value.retryable and KEY not in str(caught.value)


async def test_a_hung_server_times_out_retryably() -> None:
    async with FakeOpenAI([Failure(hang=True)]) as fake:
        with pytest.raises(ProviderError, match="timed out") as caught:
            await collect(make(fake, timeoutS=0.5))
    assert caught.value.retryable


async def test_a_stream_that_stalls_after_some_text_times_out() -> None:
    async with FakeOpenAI([Reply(text=("Hello", " world"), stall_after=2)]) as fake:
        received: list[LlmEvent] = []
        with pytest.raises(ProviderError) as caught:
            async for event in make(fake, timeoutS=0.5).stream(HELLO, ()):
                received.append(event)
    assert received == [TextDelta("Hello")] and caught.value.retryable


async def test_a_dropped_connection_mid_stream_is_retryable() -> None:
    async with FakeOpenAI([Reply(text=("a", "b", "c"), drop_after=2)]) as fake:
        with pytest.raises(ProviderError) as caught:
            await collect(make(fake))
    assert caught.value.retryable


async def test_an_error_event_mid_stream_is_retryable() -> None:
    async with FakeOpenAI([Reply(text=("a", "b"), error_event_after=2)]) as fake:
        with pytest.raises(ProviderError, match="stream error") as caught:
            await collect(make(fake))
    assert caught.value.retryable


async def test_retry_stream_recovers_before_the_first_token(sleep: RecordingSleep) -> None:
    script = [Failure(500), Failure(429), Reply(text=("Recovered.",))]
    async with FakeOpenAI(script) as fake:
        llm = make(fake)
        events = [e async for e in retry_stream(lambda: llm.stream(HELLO, ()), sleep=sleep)]
    assert events == [TextDelta("Recovered.")]
    assert sleep.delays == [1.0, 2.0] and len(fake.requests) == 3


async def test_retry_stream_gives_up_after_three_retries(sleep: RecordingSleep) -> None:
    async with FakeOpenAI([Failure(503)]) as fake:
        llm = make(fake)
        with pytest.raises(ProviderError):
            _ = [e async for e in retry_stream(lambda: llm.stream(HELLO, ()), sleep=sleep)]
    assert sleep.delays == [1.0, 2.0, 4.0] and len(fake.requests) == 4


async def test_retry_stream_never_repeats_text_already_spoken(sleep: RecordingSleep) -> None:
    async with FakeOpenAI([Reply(text=("Once", " more"), drop_after=2)]) as fake:
        llm = make(fake)
        received: list[LlmEvent] = []
        with pytest.raises(ProviderError):
            async for event in retry_stream(lambda: llm.stream(HELLO, ()), sleep=sleep):
                received.append(event)
    assert received == [TextDelta("Once")] and sleep.delays == [] and len(fake.requests) == 1


async def test_compatible_server_without_key_gets_the_placeholder() -> None:
    async with FakeOpenAI([Reply(text=("hi",))], api_key=None) as fake:
        config = OpenAICompatibleConfig.model_validate(
            {"provider": "openai-compatible", "model": "qwen2.5", "baseUrl": fake.base_url})
        llm = build_compatible(config, {"OPENAI_API_KEY": "sk-must-not-leak"})
        events = await collect(llm)
    assert events == [TextDelta("hi")]
    assert "sk-must-not-leak" not in fake.headers[0].get("authorization", "")


async def test_warm_opens_the_connection_the_turns_then_reuse() -> None:
    # Behind a relay that charges every new connection, as a vendor far away does.
    async with FakeOpenAI([Reply(text=("Hi.",))], new_connection_s=0.02) as fake:
        llm = make(fake)
        await llm.warm()
        assert fake.models_requests == 1 and fake.link is not None
        assert fake.link.connections == 1
        for _ in range(3):
            assert await collect(llm) == [TextDelta("Hi.")]
    assert fake.link.connections == 1  # every turn rode the warmed connection
    assert fake.completed == 3


@pytest.mark.parametrize(("keep_alive_s", "connections"), [(400.0, 1), (0.1, 3)])
async def test_a_connection_the_vendor_closed_while_idle_is_replaced_not_failed(
    keep_alive_s: float, connections: int,
) -> None:
    """Turns 0.3 s apart: kept by a vendor that keeps idle connections (the real API's
    front keeps them 400 s), and each turn on a new one, without an error, when the
    vendor closed the last one while it sat idle."""
    async with FakeOpenAI([Reply(text=("Hi.",))], new_connection_s=0.01,
                          keep_alive_s=keep_alive_s) as fake:
        llm = make(fake)
        for _ in range(3):
            assert await collect(llm) == [TextDelta("Hi.")]
            await asyncio.sleep(0.3)
        assert fake.link is not None and fake.link.connections == connections
    assert fake.completed == 3


async def test_a_failed_warm_up_is_harmless() -> None:
    async with FakeOpenAI([Reply(text=("Hi.",))], api_key="another-key") as fake:
        llm = make(fake)
        await llm.warm()  # 401: logged, not raised; the turn will say what is wrong
    assert fake.models_requests == 1


async def test_a_malformed_chunk_mid_stream_is_retryable_and_never_repeated(
    sleep: RecordingSleep,
) -> None:
    async with FakeOpenAI([Reply(text=("Once", " more"), malformed_after=2)]) as fake:
        llm = make(fake)
        received: list[LlmEvent] = []
        with pytest.raises(ProviderError, match="malformed") as caught:
            async for event in retry_stream(lambda: llm.stream(HELLO, ()), sleep=sleep):
                received.append(event)
    assert caught.value.retryable
    assert received == [TextDelta("Once")] and len(fake.requests) == 1


async def test_a_server_error_after_the_stream_began_keeps_its_message() -> None:
    async with FakeOpenAI([Reply(text=("a", "b"), error_event_after=2)]) as fake:
        received: list[LlmEvent] = []
        with pytest.raises(ProviderError) as caught:
            async for event in make(fake).stream(HELLO, ()):
                received.append(event)
    assert received == [TextDelta("a")]
    assert "The server had an error while processing your request." in str(caught.value)


async def test_concurrent_calls_share_one_pool_and_reuse_its_connections() -> None:
    # Ten calls at once open ten connections; their next turns open none.
    reply = Reply(text=("Hi", " there."), first_token_delay_s=0.05)
    async with FakeOpenAI([reply], new_connection_s=0.02) as fake:
        llm = make(fake)
        for _ in range(3):
            results = await asyncio.gather(*(collect(llm) for _ in range(10)))
            assert all(r == [TextDelta("Hi"), TextDelta(" there.")] for r in results)
        assert fake.link is not None and fake.link.connections == 10
    assert fake.completed == 30 and fake.aborted == 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"choices": [], "usage": {"total_tokens": 9}}', ("", 0, False)),
        ('{"choices": [{"delta": {"content": "Hi"}, "finish_reason": null}]}', ("Hi", 0, False)),
        ('{"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c"}]}, '
         '"finish_reason": "tool_calls"}]}', ("", 1, True)),
    ],
)
def test_chunks_are_read_without_the_sdk_models(data: str, expected: tuple[str, int, bool]) -> None:
    chunk = openai_llm._parse_chunk("openai", data)
    assert (chunk.text, len(chunk.tool_calls), chunk.finished) == expected


@pytest.mark.parametrize("data", [
    "not json", "[1, 2]", '{"choices": [{"delta": {"content": 5}}]}',
    '{"choices": [{"delta": {"tool_calls": ["x"]}}]}', '{"choices": "abc"}',
])
def test_a_chunk_of_the_wrong_shape_is_a_retryable_provider_error(data: str) -> None:
    with pytest.raises(openai_llm._StreamError) as caught:
        openai_llm._parse_chunk("openai", data)
    assert caught.value.error.retryable and "malformed" in str(caught.value.error)


def make_h2(url: str) -> OpenAIChat:
    return openai_llm.chat("openai", OpenAIConfig(), KEY, url, prior_knowledge=True)


async def test_over_http2_every_call_shares_one_connection() -> None:
    reply = Reply(text=("Hi", " there."), first_token_delay_s=0.05)
    async with FakeOpenAI([reply]) as fake, Http2(fake, new_connection_s=0.02) as h2:
        llm = make_h2(h2.base_url)
        await llm.warm()
        for _ in range(3):
            results = await asyncio.gather(*(collect(llm) for _ in range(10)))
            assert all(r == [TextDelta("Hi"), TextDelta(" there.")] for r in results)
        assert h2.link.connections == 1
    assert fake.completed == 30


async def test_over_http2_a_cancelled_stream_leaves_the_connection_and_errors_map() -> None:
    long = Reply(text=tuple(f"w{i} " for i in range(50)), chunk_delay_s=0.01)
    script = [long, Failure(429, "Rate limit reached"), Reply(text=("a", "b"),
              error_event_after=2), Reply(text=("Next.",))]
    async with FakeOpenAI(script) as fake, Http2(fake) as h2:
        llm = make_h2(h2.base_url)
        task, _, count = await _cancel_after_first(llm)
        assert task.cancelled() and 1 <= count < 50
        with pytest.raises(ProviderError, match="429") as limited:
            await collect(llm)
        with pytest.raises(ProviderError, match="stream error") as failed:
            await collect(llm)
        assert limited.value.retryable and failed.value.retryable
        assert await collect(llm) == [TextDelta("Next.")]
        assert h2.link.connections == 1


class _IgnoresStreaming(FakeOpenAI):
    """A compatible server that answers ``stream: true`` with one JSON completion."""

    async def _chat(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        self.requests.append(json.loads(await request.body()))
        return JSONResponse({"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi"},
             "finish_reason": "stop"}]})


async def test_a_server_that_does_not_stream_is_not_retried(sleep: RecordingSleep) -> None:
    async with _IgnoresStreaming() as fake:
        llm = make(fake)
        with pytest.raises(ProviderError, match="not an event stream") as caught:
            _ = [e async for e in retry_stream(lambda: llm.stream(HELLO, ()), sleep=sleep)]
    assert not caught.value.retryable and len(fake.requests) == 1


async def test_a_turn_sends_the_headers_the_sdk_would() -> None:
    """The request is built once from the SDK's own headers: the key, its User-Agent and
    platform headers, JSON; nothing per request is lost that the vendor reads."""
    async with FakeOpenAI([Reply(text=("Hi",))]) as fake:
        llm = make(fake)
        await llm.warm()  # GET /models through the SDK itself
        assert await collect(llm) == [TextDelta("Hi")]
    sent = fake.headers[-1]
    assert sent["authorization"] == f"Bearer {KEY}"
    assert sent["content-type"] == "application/json"
    assert sent["user-agent"].startswith("AsyncOpenAI/Python")
    assert sent["x-stainless-lang"] == "python"
    assert "openai-organization" not in sent  # the SDK omits it when unset
    assert fake.requests[-1]["stream"] is True
