"""One ElevenLabs multi-stream-input socket per call, against the local fake over a real
WebSocket: a context per sentence, barge-in without reconnecting, the 5-context limit,
keep-alive while idle, and a new socket in the background when one drops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes.elevenlabs import FakeElevenLabs

from callbridge.errors import ProviderError
from callbridge.providers.tts.elevenlabs import ElevenLabsConfig, ElevenLabsTTS, build
from callbridge.providers.tts.elevenlabs_call import MAX_CONTEXTS, ElevenLabsCall
from providers_cloud.helpers import wait_for

KEY = "test-elevenlabs-key"
SENTENCES = ("Sure, let me check that.", "Your balance is forty two dollars.", "Anything else?")


def make(fake: FakeElevenLabs, **fields: Any) -> ElevenLabsTTS:
    config = ElevenLabsConfig.model_validate({"provider": "11labs", "voiceId": "voice1", **fields})
    return build(config, {"ELEVENLABS_API_KEY": KEY, "ELEVENLABS_BASE_URL": fake.base_url})


async def speak(call: ElevenLabsCall, text: str) -> bytes:
    async with asyncio.timeout(10):
        return b"".join([chunk async for chunk in call.synthesize(text)])


async def test_every_sentence_of_a_call_rides_one_socket() -> None:
    async with FakeElevenLabs(chunk_ms=100) as fake:
        call = make(fake, stability=0.3).for_call()
        try:
            for text in SENTENCES:
                assert await speak(call, text) == fake.audio_for(text)
        finally:
            await call.aclose()
        await wait_for(lambda: fake.sessions[0].closed.is_set())
    (session,) = fake.sessions
    assert session.multi and session.query["inactivity_timeout"] == "60"
    assert session.query["output_format"] == "ulaw_8000"
    assert len(session.contexts_opened) == len(SENTENCES) == len(session.contexts_closed)
    first = session.messages[0]
    assert first["text"] == " " and first["voice_settings"]["stability"] == 0.3
    assert session.messages[-1] == {"close_socket": True}
    assert session.close_code == 1000


async def test_barge_in_drops_the_context_not_the_socket() -> None:
    async with FakeElevenLabs(chunk_ms=20, chunk_delay_s=0.01) as fake:
        call = make(fake).for_call()
        try:
            stream = call.synthesize("A long answer the caller will not wait for at all.")
            first = await anext(stream)
            assert first
            await stream.aclose()  # what cancelling the reply does to its TTS stream
            # The next reply starts at once on the same socket and hears only its own audio.
            assert await speak(call, "Go ahead.") == fake.audio_for("Go ahead.")
        finally:
            await call.aclose()
    assert fake.connections == 1 == call.connections
    assert fake.sessions[0].contexts_closed[:2] == ["s1", "s2"]


async def test_never_more_contexts_than_the_vendor_allows() -> None:
    # The fake ends the socket with 1008 on a sixth open context; none may be refused.
    async with FakeElevenLabs(chunk_ms=20, chunk_delay_s=0.005) as fake:
        call = make(fake).for_call()
        try:
            texts = [f"Sentence number {i}." for i in range(MAX_CONTEXTS + 3)]
            heard = await asyncio.gather(*(speak(call, text) for text in texts))
        finally:
            await call.aclose()
    assert heard == [fake.audio_for(text) for text in texts]
    assert fake.connections == 1 and fake.sessions[0].close_code == 1000


async def test_keep_alive_holds_an_idle_socket_open() -> None:
    async with FakeElevenLabs(inactivity_timeout_s=0.3) as fake:
        call = ElevenLabsCall(make(fake), keepalive_s=0.05)
        try:
            assert await speak(call, "Hello.") == fake.audio_for("Hello.")
            await asyncio.sleep(0.6)  # twice the vendor's timeout, with nothing to say
            assert await speak(call, "Still here.") == fake.audio_for("Still here.")
        finally:
            await call.aclose()
    assert fake.connections == 1
    assert {"text": "", "context_id": "s1"} in fake.sessions[0].messages


async def test_a_dropped_socket_fails_the_sentence_and_is_replaced() -> None:
    async with FakeElevenLabs(chunk_ms=20, close_after_chunks=2) as fake:
        call = make(fake).for_call()
        try:
            with pytest.raises(ProviderError) as failed:
                await speak(call, "This sentence dies with its socket halfway.")
            assert failed.value.retryable  # the reply's retry asks again, on the new socket
            await wait_for(lambda: call.connections == 2)
            fake.close_after_chunks = None
            assert await speak(call, "Again.") == fake.audio_for("Again.")
        finally:
            await call.aclose()
    assert fake.connections == 2


async def test_a_refused_key_is_reported_not_retried() -> None:
    async with FakeElevenLabs(api_key="another-key") as fake:
        call = make(fake).for_call()
        try:
            await wait_for(lambda: fake.refused == [401])
            with pytest.raises(ProviderError) as failed:
                await speak(call, "Hello.")
        finally:
            await call.aclose()
    assert not failed.value.retryable and "401" in str(failed.value)


async def test_a_context_the_vendor_never_answers_times_out_retryably() -> None:
    async with FakeElevenLabs(hang=True) as fake:
        call = make(fake, readTimeoutS=0.2).for_call()
        try:
            with pytest.raises(ProviderError, match="no answer") as failed:
                await speak(call, "Hello?")
        finally:
            await call.aclose()
    assert failed.value.retryable


async def test_a_socket_silent_for_a_whole_read_timeout_is_replaced() -> None:
    # A stalled socket (open, saying nothing) would time out every retry on it too: the
    # sentence fails retryably and the retry is answered on a new socket.
    async with FakeElevenLabs(hang=True) as fake:
        call = make(fake, readTimeoutS=0.2).for_call()
        try:
            with pytest.raises(ProviderError, match="no answer") as failed:
                await speak(call, "Hello?")
            assert failed.value.retryable
            fake.hang = False
            assert await speak(call, "Hello again.") == fake.audio_for("Hello again.")
        finally:
            await call.aclose()
    assert fake.connections == 2 == call.connections
    assert fake.sessions[1].contexts_opened == ["s2"]
