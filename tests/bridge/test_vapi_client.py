"""The VAPI client against the fake VAPI over real HTTP and WebSocket on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes.vapi import GREETING_TONE, FakeVapi

from callbridge.audio import levels, ulaw
from callbridge.call_events import CallEvent
from callbridge.errors import ConfigError, ProviderError
from callbridge.providers.retry import record_retries
from callbridge.providers.vapi import (
    RemoteEvent,
    VapiAgent,
    VapiConfig,
    VapiSession,
    build,
    classify,
    socket_url,
)

KEY = "test-vapi-key"
SPEECH = ulaw.encode(levels.tone(300, 20, -12))
SILENCE = b"\xff" * 160


def agent_for(fake: FakeVapi, *, key: str = KEY, sleeps: list[float] | None = None,
              **block: Any) -> VapiAgent:
    async def sleep(s: float) -> None:
        if sleeps is not None:
            sleeps.append(s)

    config = VapiConfig.model_validate({"assistantId": "asst-1", **block})
    return VapiAgent(config, api_key=key, base=fake.base_url, sleep=sleep)


async def collect(
    events: AsyncIterator[RemoteEvent], until: Any, timeout_s: float = 10.0
) -> list[RemoteEvent]:
    """Read events until ``until(seen)`` holds (or the stream ends)."""
    seen: list[RemoteEvent] = []
    async with asyncio.timeout(timeout_s):
        async for event in events:
            seen.append(event)
            if until(seen):
                break
    return seen


def audio_of(events: list[RemoteEvent]) -> bytes:
    return b"".join(e for e in events if isinstance(e, bytes))


def signals(events: list[RemoteEvent]) -> list[str]:
    return [e for e in events if isinstance(e, str)]


async def speak(session: VapiSession, frames: int, *, loud: bool) -> None:
    for _ in range(frames):
        session.push_audio(SPEECH if loud else SILENCE)
        await asyncio.sleep(0.002)


async def test_create_call_greeting_echo_and_hangup() -> None:
    async with FakeVapi(greeting_ms=300) as fake:
        agent = agent_for(fake)
        session = await agent.open_session()
        events = session.events()
        greeting = await collect(events, lambda s: "bot-stopped" in s)
        call = fake.calls[0]
        assert call.body == {
            "assistantId": "asst-1",
            "transport": {
                "provider": "vapi.websocket",
                "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000},
            },
        }
        assert signals(greeting) == ["bot-started", "bot-stopped"]
        assert audio_of(greeting) == GREETING_TONE[: 300 * 8]
        # The caller speaks; the fake hears it by energy and plays it back.
        await speak(session, 10, loud=True)
        await speak(session, 20, loud=False)
        reply = await collect(events, lambda s: "bot-stopped" in s)
        assert signals(reply) == ["user-started", "bot-started", "bot-stopped"]
        assert SPEECH * 8 in audio_of(reply)
        assert bytes(call.caller_audio) == (SPEECH * 10 + SILENCE * 20)
        await session.hangup()
        await asyncio.wait_for(call.closed.wait(), 5)
        assert call.controls == [{"type": "hangup"}]
        assert call.ended_reason == "customer-ended-call"
        await agent.aclose()


async def test_inline_assistant_is_sent_as_given() -> None:
    async with FakeVapi(greeting_ms=0) as fake:
        assistant = {"firstMessage": "Hi", "model": {"provider": "openai", "model": "gpt-4o"}}
        config = VapiConfig.model_validate({"assistant": assistant})
        agent = VapiAgent(config, api_key=KEY, base=fake.base_url)
        session = await agent.open_session()
        assert fake.calls[0].body["assistant"] == assistant
        assert "assistantId" not in fake.calls[0].body
        await session.hangup()
        await agent.aclose()


async def test_caller_speech_over_the_greeting_interrupts_it() -> None:
    async with FakeVapi(greeting_ms=3000) as fake:
        agent = agent_for(fake)
        session = await agent.open_session()
        events = session.events()
        await collect(events, lambda s: len(audio_of(s)) >= 1600)
        await speak(session, 5, loud=True)
        seen = await collect(events, lambda s: "interrupted" in s)
        assert signals(seen)[-2:] == ["user-started", "interrupted"]
        assert fake.calls[0].interruptions == 1
        assert fake.calls[0].bot_bytes_sent < 3000 * 8  # the greeting was cut short
        await session.hangup()
        await agent.aclose()


async def test_assistant_ending_the_call_ends_the_stream_once() -> None:
    async with FakeVapi(greeting_ms=0) as fake:
        agent = agent_for(fake)
        session = await agent.open_session()
        fake.end_call()
        seen = await collect(session.events(), lambda s: False)  # to the end of the stream
        assert signals(seen).count("ended") == 1  # status-update and end-of-call-report
        assert signals(seen)[-1] == "ended"
        assert len(audio_of(seen)) == 600 * 8  # the goodbye came first
        assert session.ended_reason == "assistant-ended-call"
        assert fake.calls[0].sent[-2:] == ["status-update", "end-of-call-report"]
        await session.aclose()
        await agent.aclose()


async def test_a_refused_key_is_not_retried_and_not_echoed() -> None:
    async with FakeVapi() as fake:
        sleeps: list[float] = []
        agent = agent_for(fake, key="wrong-key-123", sleeps=sleeps)
        with pytest.raises(ProviderError) as caught:
            await agent.open_session()
        assert not caught.value.retryable
        assert "401" in str(caught.value) and "VAPI_API_KEY" in str(caught.value)
        assert "wrong-key-123" not in str(caught.value)
        assert fake.create_requests == 1 and sleeps == [] and fake.calls == []
        await agent.aclose()


async def test_server_errors_are_retried_with_backoff() -> None:
    async with FakeVapi(greeting_ms=0, fail_create=[500, 503]) as fake:
        sleeps: list[float] = []
        agent = agent_for(fake, sleeps=sleeps)
        retried: list[CallEvent] = []
        session = await agent.open_session(on_retry=record_retries(retried.append))
        assert sleeps == [1.0, 2.0] and fake.create_requests == 3 and len(fake.calls) == 1
        # Each retry is told to the call's record, typed.
        assert [(e.kind, e.data["provider"], e.data["retry"], e.data["delay_s"])
                for e in retried] == [("provider_retry", "vapi", 1, 1.0),
                                      ("provider_retry", "vapi", 2, 2.0)]
        await session.hangup()
        await agent.aclose()


async def test_persistent_server_errors_give_up_after_the_last_retry() -> None:
    async with FakeVapi(fail_create=[500] * 10) as fake:
        sleeps: list[float] = []
        agent = agent_for(fake, sleeps=sleeps)
        with pytest.raises(ProviderError) as caught:
            await agent.open_session()
        assert caught.value.retryable and "HTTP 500" in str(caught.value)
        assert sleeps == [1.0, 2.0, 4.0] and fake.create_requests == 4
        await agent.aclose()


async def test_a_refused_socket_upgrade_is_a_provider_error() -> None:
    async with FakeVapi(reject_socket=403) as fake:
        sleeps: list[float] = []
        agent = agent_for(fake, sleeps=sleeps)
        with pytest.raises(ProviderError) as caught:
            await agent.open_session()
        assert not caught.value.retryable and "HTTP 403" in str(caught.value)
        assert sleeps == []
        await agent.aclose()


async def test_a_dropped_socket_mid_call_raises_from_events() -> None:
    async with FakeVapi(greeting_ms=0, drop_after_frames=5) as fake:
        agent = agent_for(fake)
        session = await agent.open_session()
        await speak(session, 8, loud=False)
        with pytest.raises(ProviderError) as caught:
            await collect(session.events(), lambda s: False)
        assert caught.value.retryable and "1011" in str(caught.value)
        await session.aclose()
        await agent.aclose()


async def test_unreachable_api_is_a_retryable_error() -> None:
    async with FakeVapi() as fake:
        base = fake.base_url
    config = VapiConfig.model_validate({"assistantId": "a"})
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    agent = VapiAgent(config, api_key=KEY, base=base, retry_delays_s=(0.5,), sleep=sleep)
    with pytest.raises(ProviderError) as caught:
        await agent.open_session()
    assert caught.value.retryable and sleeps == [0.5]
    await agent.aclose()


def test_build_needs_the_key_and_honours_base_urls() -> None:
    block = VapiConfig.model_validate({"assistantId": "a"})
    with pytest.raises(ConfigError, match="VAPI_API_KEY"):
        build(block, {})
    assert build(block, {"VAPI_API_KEY": "k"}).base == "https://api.vapi.ai"
    env = {"VAPI_API_KEY": "k", "VAPI_BASE_URL": "http://proxy.local:8080/"}
    assert build(block, env).base == "http://proxy.local:8080"
    moved = VapiConfig.model_validate({"assistantId": "a", "baseUrl": "https://eu.example"})
    assert build(moved, env).base == "https://eu.example"


@pytest.mark.parametrize("block", [{}, {"assistantId": "a", "assistant": {"name": "x"}}])
def test_exactly_one_assistant_is_required(block: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="exactly one of assistantId or assistant"):
        VapiConfig.model_validate(block)


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("wss://api.vapi.ai/abc/transport", "wss://api.vapi.ai/abc/transport"),
        ("/abc/transport", "wss://api.vapi.ai/abc/transport"),
        ("http://127.0.0.1:9/abc/transport", "ws://127.0.0.1:9/abc/transport"),
    ],
)
def test_socket_url(returned: str, expected: str) -> None:
    assert socket_url("https://api.vapi.ai", returned) == expected


@pytest.mark.parametrize(
    ("message", "signal"),
    [
        ({"type": "user-interrupted"}, "interrupted"),
        ({"type": "speech-update", "role": "user", "status": "started"}, "user-started"),
        ({"type": "speech-update", "role": "user", "status": "stopped"}, None),
        ({"type": "speech-update", "role": "assistant", "status": "started"}, "bot-started"),
        ({"type": "speech-update", "role": "assistant", "status": "stopped"}, "bot-stopped"),
        ({"type": "status-update", "status": "in-progress"}, None),
        ({"type": "status-update", "status": "ended", "endedReason": "x"}, "ended"),
        ({"type": "end-of-call-report"}, "ended"),
        ({"message": {"type": "user-interrupted"}}, "interrupted"),
        ({"type": "transcript", "role": "user", "transcript": "hi"}, None),
        ({"type": "conversation-update", "messages": []}, None),
    ],
)
def test_classify(message: dict[str, Any], signal: str | None) -> None:
    assert classify(message) == signal
