"""ElevenLabs streaming TTS over the ``stream-input`` WebSocket, μ-law 8 kHz out.

In a call, ``for_call()`` gives the call one ``multi-stream-input`` socket for all its
sentences (``elevenlabs_call``); ``synthesize`` here stays for one-off speech.

How it works: each ``synthesize(text)`` opens a socket
(``/v1/text-to-speech/{voice}/stream-input?output_format=ulaw_8000``, header
``xi-api-key``, no compression), sends the opening message with the voice settings, the
segment with ``flush: true``, and the end-of-input ``{"text": ""}``; it yields the
base64-decoded audio of each answer until ``isFinal``. ``ulaw_8000`` is exactly Twilio's
format, so bytes go out untouched. On cancel (barge-in) the socket is dropped at once:
nothing buffered in it can reach the caller, and closing it stops the vendor's billing.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, Literal
from urllib.parse import quote, urlencode

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from callbridge.errors import ProviderError
from callbridge.providers.env import base_url, require_key, to_websocket_url
from callbridge.providers.registry import ProviderBlock, ProviderSpec
from callbridge.providers.tts.elevenlabs_call import ElevenLabsCall
from callbridge.providers.ws_client import VendorConnection

__all__ = ["SPEC", "ElevenLabsConfig", "ElevenLabsTTS"]

log = logging.getLogger(__name__)

# websockets logs handshake headers (our API key) at DEBUG; pin its logger at INFO.
_WIRE_LOG = logging.getLogger("callbridge.providers.wire.elevenlabs")
_WIRE_LOG.setLevel(logging.INFO)

NAME: Final = "11labs"
DEFAULT_BASE_URL: Final = "https://api.elevenlabs.io"
_RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
# Words in an error message that mean a retry cannot help (bad key, quota, bad request).
_FATAL_HINTS: Final = ("api key", "api_key", "unauthorized", "quota", "not found",
                       "invalid_input", "voice_settings", "permission")
_closers: set[asyncio.Task[None]] = set()


class ElevenLabsConfig(ProviderBlock):
    """The ``voice`` block, with VAPI's field names (``voiceId``, ``similarityBoost``…)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    provider: Literal["11labs"] = "11labs"
    voice_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    model: str = "eleven_flash_v2_5"
    stability: float = Field(0.5, ge=0, le=1)
    similarity_boost: float = Field(0.75, ge=0, le=1)
    style: float | None = Field(None, ge=0, le=1)
    use_speaker_boost: bool | None = None
    speed: float | None = Field(None, ge=0.7, le=1.2)
    language: str | None = Field(None, pattern=r"^[a-z]{2}$")
    auto_mode: bool = Field(True, description="whole segments are sent: skip the vendor's buffer")
    base_url: str | None = None
    connect_timeout_s: float = Field(5.0, gt=0, le=60)
    read_timeout_s: float = Field(10.0, gt=0, le=120, description="silence before giving up")


class ElevenLabsTTS:
    """A ``TextToSpeech``: one socket per segment, closed when the segment is done."""

    name = NAME

    def __init__(self, config: ElevenLabsConfig, *, api_key: str, url: str) -> None:
        self.config = config
        self._api_key = api_key
        self.url = url
        self.malformed_messages = 0

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        ws = await self.connect()
        finished = False
        try:
            await ws.send(json.dumps(self.opening()))
            await ws.send(json.dumps({"text": text.strip() + " ", "flush": True}))
            await ws.send(json.dumps({"text": ""}))
            async for audio in self._receive(ws):
                yield audio
            finished = True
        except ConnectionClosed as exc:  # a send failed: the receiver never ran
            raise _closed_error(exc.rcvd.code if exc.rcvd else None, None, None) from exc
        finally:
            if finished:
                await ws.close()
            else:
                _close_soon(ws)  # barge-in must not wait for the closing handshake

    def for_call(self) -> ElevenLabsCall:
        """One socket for the call, connecting now (in the background)."""
        return ElevenLabsCall(self)

    def opening(self) -> dict[str, Any]:
        c = self.config
        settings: dict[str, Any] = {
            "stability": c.stability, "similarity_boost": c.similarity_boost
        }
        for key, value in (("style", c.style), ("use_speaker_boost", c.use_speaker_boost),
                           ("speed", c.speed)):
            if value is not None:
                settings[key] = value
        return {"text": " ", "voice_settings": settings}

    async def connect(self, url: str | None = None) -> ClientConnection:
        try:
            return await connect(
                url or self.url,
                additional_headers={"xi-api-key": self._api_key},
                compression=None,
                open_timeout=self.config.connect_timeout_s,
                close_timeout=1.0,
                logger=_WIRE_LOG,
                create_connection=VendorConnection,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ProviderError(
                NAME,
                f"upgrade refused with HTTP {status}: {_detail(exc.response.body)}",
                retryable=status >= 500 or status in _RETRYABLE_STATUS,
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ProviderError(NAME, f"cannot connect: {exc!r}", retryable=True) from exc

    async def _receive(self, ws: ClientConnection) -> AsyncIterator[bytes]:
        vendor_error: Mapping[str, Any] | None = None
        got_audio = False
        while True:
            try:
                async with asyncio.timeout(self.config.read_timeout_s):
                    message = await ws.recv()
            except TimeoutError:
                raise ProviderError(
                    NAME, f"no answer for {self.config.read_timeout_s:g} s", retryable=True
                ) from None
            except ConnectionClosed:
                code = ws.close_code
                if code == 1000 and vendor_error is None and got_audio:
                    return  # closed normally without isFinal: take what came
                raise _closed_error(code, ws.close_reason, vendor_error) from None
            if isinstance(message, bytes):
                log.warning("elevenlabs.unexpected_binary bytes=%d", len(message))
                continue
            data = self.parse(message)
            if data is None:
                continue
            audio = data.get("audio")
            if audio:
                chunk = _decode(audio)
                if chunk:
                    got_audio = True
                    yield chunk
            if data.get("isFinal") is True:
                return
            if "error" in data or ("message" in data and not audio):
                vendor_error = data
                log.warning("elevenlabs.error_message %s", _detail(data))

    def parse(self, text: str) -> dict[str, Any] | None:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self.malformed_messages += 1
            log.warning("elevenlabs.malformed_message count=%d head=%r",
                        self.malformed_messages, text[:80])
            return None
        return data


def _decode(audio: object) -> bytes:
    try:
        return binascii.a2b_base64(str(audio), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderError(NAME, f"audio is not base64: {exc}", retryable=True) from exc


def _closed_error(
    code: int | None, reason: str | None, vendor_error: Mapping[str, Any] | None
) -> ProviderError:
    detail = _detail(vendor_error) if vendor_error else (reason or "")
    fatal = code == 1008 and any(hint in detail.lower() for hint in _FATAL_HINTS)
    return ProviderError(
        NAME, f"socket closed before the audio ended: code {code} {detail}".strip(),
        retryable=not fatal,
    )


def _detail(body: object) -> str:
    """The vendor's error text: ``{"message", "error"}`` on the socket, ``{"detail"}`` in HTTP."""
    if isinstance(body, bytes | bytearray):
        raw = bytes(body)
        try:
            body = json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace").strip()[:200] or "(no body)"
    if isinstance(body, Mapping):
        inner = body.get("detail", body)
        if isinstance(inner, Mapping):
            parts = [str(inner.get(k)) for k in ("error", "status", "message") if inner.get(k)]
            return " - ".join(parts)[:300]
        return str(inner)[:300]
    return str(body)[:300]


def _close_soon(ws: ClientConnection) -> None:
    task = asyncio.get_running_loop().create_task(ws.close(), name="elevenlabs.close")
    _closers.add(task)
    task.add_done_callback(_closers.discard)


def stream_input_url(config: ElevenLabsConfig, base: str) -> str:
    params = {"model_id": config.model, "output_format": "ulaw_8000",
              "auto_mode": "true" if config.auto_mode else "false"}
    if config.language:
        params["language_code"] = config.language
    voice = quote(config.voice_id, safe="")
    return f"{to_websocket_url(base)}/v1/text-to-speech/{voice}/stream-input?{urlencode(params)}"


def build(config: ElevenLabsConfig, env: Mapping[str, str]) -> ElevenLabsTTS:
    key = require_key(env, "ELEVENLABS_API_KEY", "11labs")
    base = base_url(config.base_url, env, "ELEVENLABS_BASE_URL", DEFAULT_BASE_URL)
    return ElevenLabsTTS(config, api_key=key, url=stream_input_url(config, base))


SPEC = ProviderSpec(kind="tts", name=NAME, config=ElevenLabsConfig, build=build)
