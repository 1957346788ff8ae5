"""OpenAI-compatible speech (``POST {baseUrl}/audio/speech``) for self-hosted stacks.

Asks for ``response_format: pcm`` (raw 16-bit mono, 24 kHz for OpenAI and the common
self-hosted servers), streams the body with httpx, resamples once with a streaming soxr
resampler to 8 kHz and encodes μ-law, so audio starts flowing before synthesis ends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, Literal

import httpx
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from callbridge.audio import ulaw
from callbridge.audio.frames import SAMPLE_RATE_HZ
from callbridge.audio.resample import StreamResampler
from callbridge.errors import ProviderError
from callbridge.providers.env import base_url, require_key
from callbridge.providers.registry import ProviderBlock, ProviderSpec

__all__ = ["SPEC", "OpenAISpeech", "OpenAISpeechConfig", "http_error"]

log = logging.getLogger(__name__)

NAME: Final = "openai-compatible"
_RETRYABLE_STATUS: Final = frozenset({408, 409, 425, 429})


class OpenAISpeechConfig(ProviderBlock):
    """The ``voice`` block; ``voiceId`` is VAPI's name for the voice."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    provider: Literal["openai-compatible"] = "openai-compatible"
    model: str = "tts-1"
    voice_id: str = "alloy"
    speed: float | None = Field(None, ge=0.25, le=4.0)
    base_url: str | None = None
    api_key_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    sample_rate_hz: int = Field(24000, ge=8000, le=48000, description="rate of the pcm answer")
    timeout_s: float = Field(10.0, gt=0, le=120)


class OpenAISpeech:
    """A ``TextToSpeech`` over HTTP; one shared connection pool per process."""

    name = NAME

    def __init__(
        self, config: OpenAISpeechConfig, *, url: str, api_key: str | None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.url = f"{url}/audio/speech"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx.AsyncClient(
            timeout=config.timeout_s, limits=httpx.Limits(keepalive_expiry=120.0)
        )

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        body: dict[str, Any] = {"model": self.config.model, "voice": self.config.voice_id,
                                "input": text.strip(), "response_format": "pcm"}
        if self.config.speed is not None:
            body["speed"] = self.config.speed
        # Keeps a half sample between network reads, and passes 8 kHz through untouched.
        resampler = StreamResampler(self.config.sample_rate_hz, SAMPLE_RATE_HZ)
        try:
            async with self._http.stream(
                "POST", self.url, json=body, headers=self._headers
            ) as response:
                if response.is_error:
                    raise http_error(NAME, response.status_code, (await response.aread())[:300])
                async for chunk in response.aiter_bytes():
                    pcm = resampler.process(chunk)
                    if pcm:
                        yield ulaw.encode(pcm)
                tail = resampler.flush()
                if tail:
                    yield ulaw.encode(tail)
        except httpx.TimeoutException as exc:
            raise ProviderError(NAME, "speech timed out", retryable=True) from exc
        except httpx.TransportError as exc:
            raise ProviderError(NAME, f"speech connection failed: {exc!r}",
                                retryable=True) from exc

    async def aclose(self) -> None:
        await self._http.aclose()


def http_error(provider: str, status: int, body: bytes) -> ProviderError:
    """An HTTP error answer as a ``ProviderError`` (429 and 5xx can pass, other 4xx cannot)."""
    detail = body.decode("utf-8", "replace").strip() or "(no body)"
    return ProviderError(provider, f"HTTP {status}: {detail}",
                         retryable=status >= 500 or status in _RETRYABLE_STATUS)


def build(config: OpenAISpeechConfig, env: Mapping[str, str]) -> OpenAISpeech:
    url = base_url(config.base_url, env, "OPENAI_BASE_URL", None)
    key = require_key(env, config.api_key_env, NAME) if config.api_key_env else None
    return OpenAISpeech(config, url=url, api_key=key)


SPEC = ProviderSpec(kind="tts", name=NAME, config=OpenAISpeechConfig, build=build)
