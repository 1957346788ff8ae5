"""OpenAI-compatible transcription (``POST {baseUrl}/audio/transcriptions``), per utterance.

The endpoint is not streaming, so the stream buffers the caller's μ-law while they speak
and, when the engine's endpointing calls ``finalize``, sends that utterance as a WAV in a
multipart request and emits one final ``TranscriptUpdate``. Utterances are transcribed
in order by the stream's own task; ``push_audio``/``finalize`` never wait on the network.
There are no interim transcripts, so barge-in falls back to VAD alone.

A failed request is retried with the provider policy (``providers/retry.py``: 429, 5xx,
timeouts and dropped connections; never a refused key or a malformed request), the same
utterance each time. When the retries are spent the stream ends with a ``ProviderError``
that is no longer retryable, so the engine goes to its apology instead of trying again.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import wave
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Final, Literal

import httpx
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from callbridge.audio import ulaw
from callbridge.audio.frames import SAMPLE_RATE_HZ
from callbridge.errors import ProviderError
from callbridge.providers.base import SttEvent, TranscriptUpdate
from callbridge.providers.env import base_url, require_key
from callbridge.providers.inbox import Inbox
from callbridge.providers.registry import ProviderBlock, ProviderSpec
from callbridge.providers.retry import DEFAULT_DELAYS_S, OnRetry, Sleep, retry_call
from callbridge.providers.tts.openai_compatible import http_error

__all__ = ["SPEC", "OpenAITranscription", "OpenAITranscriptionConfig", "TranscriptionStream"]

log = logging.getLogger(__name__)

NAME: Final = "openai-compatible"


class OpenAITranscriptionConfig(ProviderBlock):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    provider: Literal["openai-compatible"] = "openai-compatible"
    model: str = "whisper-1"
    language: str | None = Field("en", pattern=r"^[a-z]{2,3}$")
    prompt: str | None = None
    base_url: str | None = None
    api_key_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    timeout_s: float = Field(15.0, gt=0, le=120)
    max_utterance_s: float = Field(60.0, gt=1, le=600, description="older audio is dropped")


class OpenAITranscription:
    """A ``SpeechToText``; the HTTP connection pool is shared by every call's stream."""

    name = NAME

    def __init__(
        self, config: OpenAITranscriptionConfig, *, url: str, api_key: str | None,
        http: httpx.AsyncClient | None = None,
        retry_delays_s: Sequence[float] = DEFAULT_DELAYS_S,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config
        self.url = f"{url}/audio/transcriptions"
        self.retry_delays_s = tuple(retry_delays_s)
        self.sleep = sleep
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx.AsyncClient(
            timeout=config.timeout_s, limits=httpx.Limits(keepalive_expiry=120.0)
        )

    async def open_stream(self, *, on_retry: OnRetry | None = None) -> TranscriptionStream:
        return TranscriptionStream(self, on_retry=on_retry)

    async def transcribe(self, ulaw_audio: bytes) -> str:
        """One utterance (μ-law 8 kHz) → its text."""
        data: dict[str, str] = {"model": self.config.model, "response_format": "json"}
        if self.config.language:
            data["language"] = self.config.language
        if self.config.prompt:
            data["prompt"] = self.config.prompt
        files = {"file": ("utterance.wav", _wav(ulaw.decode(ulaw_audio)), "audio/wav")}
        try:
            response = await self._http.post(
                self.url, data=data, files=files, headers=self._headers
            )
        except httpx.TimeoutException as exc:
            raise ProviderError(NAME, "transcription timed out", retryable=True) from exc
        except httpx.TransportError as exc:
            raise ProviderError(NAME, f"transcription connection failed: {exc!r}",
                                retryable=True) from exc
        if response.is_error:
            raise http_error(NAME, response.status_code, response.content[:300])
        try:
            text = response.json()["text"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(NAME, f"malformed transcription answer: {response.text[:120]!r}",
                                retryable=True) from exc
        return str(text).strip()

    async def transcribe_with_retries(
        self, ulaw_audio: bytes, *, on_retry: OnRetry | None = None
    ) -> str:
        """``transcribe`` under the retry policy; a spent policy is final (not retryable)."""
        try:
            return await retry_call(
                functools.partial(self.transcribe, ulaw_audio),
                delays_s=self.retry_delays_s,
                sleep=self.sleep,
                on_retry=on_retry,
            )
        except ProviderError as exc:
            if not exc.retryable:
                raise
            attempts = len(self.retry_delays_s) + 1
            detail = str(exc).removeprefix(f"{NAME}: ")
            raise ProviderError(
                NAME, f"{detail} (gave up after {attempts} attempts)", retryable=False
            ) from exc

    async def aclose(self) -> None:
        await self._http.aclose()


class TranscriptionStream:
    """One call's ``SpeechToTextStream`` over the per-utterance endpoint."""

    def __init__(
        self, provider: OpenAITranscription, *, on_retry: OnRetry | None = None
    ) -> None:
        self._provider = provider
        self._on_retry = on_retry  # the call's: each retried utterance is recorded
        self._limit = int(provider.config.max_utterance_s * SAMPLE_RATE_HZ)
        self._audio = bytearray()
        self._utterances: asyncio.Queue[bytes] = asyncio.Queue()
        self._inbox: Inbox[SttEvent] = Inbox()
        self._closed = False
        self.dropped_bytes = 0
        self._worker = asyncio.create_task(self._work(), name="transcription.worker")

    def push_audio(self, ulaw: bytes) -> None:
        if self._closed:
            return
        self._audio.extend(ulaw)
        excess = len(self._audio) - self._limit
        if excess > 0:
            del self._audio[:excess]
            self.dropped_bytes += excess

    def finalize(self) -> None:
        if self._closed:
            return
        self._utterances.put_nowait(bytes(self._audio))
        self._audio.clear()

    def events(self) -> AsyncIterator[SttEvent]:
        return self._inbox.events()

    async def aclose(self) -> None:
        """Drop pending utterances: after the call ends nobody waits for their text."""
        self._closed = True
        self._worker.cancel()
        await asyncio.wait({self._worker})
        self._inbox.end()

    async def _work(self) -> None:
        try:
            while True:
                audio = await self._utterances.get()
                text = (
                    await self._provider.transcribe_with_retries(audio, on_retry=self._on_retry)
                    if audio
                    else ""
                )
                self._inbox.put(TranscriptUpdate(text, is_final=True, speech_final=True))
        except ProviderError as exc:
            log.warning("transcription.failed retryable=%s error=%s", exc.retryable, exc)
            self._closed = True
            self._inbox.end(exc)


def _wav(pcm16: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE_HZ)
        out.writeframes(pcm16)
    return buffer.getvalue()


def build(config: OpenAITranscriptionConfig, env: Mapping[str, str]) -> OpenAITranscription:
    url = base_url(config.base_url, env, "OPENAI_BASE_URL", None)
    key = require_key(env, config.api_key_env, NAME) if config.api_key_env else None
    return OpenAITranscription(config, url=url, api_key=key)


SPEC = ProviderSpec(kind="stt", name=NAME, config=OpenAITranscriptionConfig, build=build)
