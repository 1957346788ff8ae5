"""The OpenAI-compatible transcriber retries a failed utterance with the provider policy
(issue 10): 429, 5xx and dropped connections are retried after 1, 2 and 4 s (the sleep
is injected, so nothing waits), with the same audio each time; a refused key is not; a
spent policy ends the stream with a final ``ProviderError`` for the engine's apology."""

from __future__ import annotations

import pytest
from fakes.openai_audio import FakeOpenAIAudio
from fakes.script import Failure

from callbridge.audio import ulaw
from callbridge.call_events import CallEvent, ProviderRetried
from callbridge.errors import ProviderError
from callbridge.providers.base import SttEvent, TranscriptUpdate
from callbridge.providers.retry import record_retries
from callbridge.providers.stt.openai_compatible import (
    OpenAITranscription,
    OpenAITranscriptionConfig,
)
from providers_cloud.helpers import RecordingSleep, take_until

KEY = "test-speech-key"
UTTERANCE = [bytes([0x20 + i % 64]) * 160 for i in range(25)]


def provider(fake: FakeOpenAIAudio, sleep: RecordingSleep, **fields: object) -> OpenAITranscription:
    config = OpenAITranscriptionConfig.model_validate(fields)
    return OpenAITranscription(config, url=fake.base_url, api_key=KEY, sleep=sleep)


async def transcribe_one(transcriber: OpenAITranscription) -> list[SttEvent]:
    stream = await transcriber.open_stream()
    try:
        for frame in UTTERANCE:
            stream.push_audio(frame)
        stream.finalize()
        return await take_until(stream.events(), lambda e: True)
    finally:
        await stream.aclose()


@pytest.mark.parametrize(
    "failures", [[Failure(500)], [Failure(429), Failure(503)], [Failure(502)] * 3],
    ids=["500", "429-then-503", "three-502s"],
)
async def test_server_errors_are_retried_with_the_same_audio(
    failures: list[Failure], sleep: RecordingSleep
) -> None:
    async with FakeOpenAIAudio(["check my bill"], transcription_failures=failures) as fake:
        events = await transcribe_one(provider(fake, sleep))
    assert events == [TranscriptUpdate("check my bill", is_final=True, speech_final=True)]
    assert sleep.delays == [1.0, 2.0, 4.0][: len(failures)]
    assert len(fake.uploads) == len(failures) + 1
    assert {u.pcm16 for u in fake.uploads} == {ulaw.decode(b"".join(UTTERANCE))}


async def test_a_dropped_connection_is_retried(sleep: RecordingSleep) -> None:
    async with FakeOpenAIAudio(["check my bill"], drop_transcriptions=2) as fake:
        events = await transcribe_one(provider(fake, sleep))
    assert events == [TranscriptUpdate("check my bill", is_final=True, speech_final=True)]
    assert sleep.delays == [1.0, 2.0] and len(fake.uploads) == 3


async def test_a_server_that_does_not_answer_is_retried(sleep: RecordingSleep) -> None:
    async with FakeOpenAIAudio(["check my bill"],
                               transcription_failures=[Failure(hang=True)]) as fake:
        events = await transcribe_one(provider(fake, sleep, timeoutS=0.3))
    assert events == [TranscriptUpdate("check my bill", is_final=True, speech_final=True)]
    assert sleep.delays == [1.0] and len(fake.uploads) == 2


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_client_errors_are_not_retried(status: int, sleep: RecordingSleep) -> None:
    async with FakeOpenAIAudio(["unused"], transcription_failures=[Failure(status)]) as fake:
        with pytest.raises(ProviderError) as caught:
            await transcribe_one(provider(fake, sleep))
    assert caught.value.retryable is False and str(status) in str(caught.value)
    assert sleep.delays == [] and len(fake.uploads) == 1


async def test_spent_retries_end_the_stream_with_a_final_error(sleep: RecordingSleep) -> None:
    """Four failures in a row: the stream ends with an error the engine must not retry
    again (its STT link gives up and apologises), naming the vendor's last answer."""
    async with FakeOpenAIAudio(["unused"], transcription_failures=[Failure(503)] * 4,
                               drop_transcriptions=0) as fake:
        with pytest.raises(ProviderError) as caught:
            await transcribe_one(provider(fake, sleep))
    error = caught.value
    assert error.provider == "openai-compatible" and error.retryable is False
    assert "HTTP 503" in str(error) and "gave up after 4 attempts" in str(error)
    assert isinstance(error.__cause__, ProviderError) and error.__cause__.retryable
    assert sleep.delays == [1.0, 2.0, 4.0] and len(fake.uploads) == 4


async def test_each_retried_utterance_is_told_to_the_call(sleep: RecordingSleep) -> None:
    """The stream's own retries reach the call's record through the hook it was opened
    with (the engine passes the call's ``record_retries(emit)``)."""
    retried: list[CallEvent] = []
    async with FakeOpenAIAudio(["check my bill"],
                               transcription_failures=[Failure(429), Failure(503)]) as fake:
        stream = await provider(fake, sleep).open_stream(on_retry=record_retries(retried.append))
        try:
            for frame in UTTERANCE:
                stream.push_audio(frame)
            stream.finalize()
            events = await take_until(stream.events(), lambda e: True)
        finally:
            await stream.aclose()
    assert events == [TranscriptUpdate("check my bill", is_final=True, speech_final=True)]
    assert [(e.kind, e.data["provider"], e.data["retry"], e.data["delay_s"])
            for e in retried] == [("provider_retry", "openai-compatible", 1, 1.0),
                                  ("provider_retry", "openai-compatible", 2, 2.0)]
    assert all(isinstance(e, ProviderRetried) and "HTTP" in e.error for e in retried)
