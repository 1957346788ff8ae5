"""VAPI as the whole voice engine, over its WebSocket transport (bridge mode).

How it works (docs.vapi.ai/calls/websocket-transport): ``POST {base}/call`` with the
assistant (``assistantId`` or an inline ``assistant``) and ``transport: {provider:
"vapi.websocket", audioFormat: μ-law 8 kHz raw}`` creates a call whose answer carries
``transport.websocketCallUrl``. On that socket binary frames are raw μ-law both ways
(Twilio's format: nothing is transcoded) and text frames are JSON messages. We send
``{"type": "hangup"}`` to end the call; VAPI sends status messages, of which a few matter
to the line: ``user-interrupted`` (drop what the caller has buffered), ``speech-update``
(who started or stopped speaking) and ``status-update``/``end-of-call-report`` (the call
is over). Everything else (transcripts, conversation updates) is logged at DEBUG.

Each session owns a sender task draining a bounded outbox, so ``push_audio`` never waits
on VAPI, and a receiver task turning frames into ``RemoteEvent`` values. Those are plain
``bytes`` and string literals on purpose: the engine's bridge declares the same shapes
structurally, and providers never import the engine (DESIGN.md §2).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final, Self
from urllib.parse import urljoin

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from callbridge.errors import ProviderError
from callbridge.providers.base import RemoteEvent, RemoteSignal
from callbridge.providers.env import base_url, require_key, to_websocket_url
from callbridge.providers.inbox import Inbox
from callbridge.providers.retry import DEFAULT_DELAYS_S, OnRetry, Sleep, retry_call

__all__ = [
    "DEFAULT_BASE_URL",
    "RemoteEvent",
    "RemoteSignal",
    "VapiAgent",
    "VapiConfig",
    "VapiSession",
    "build",
    "classify",
]

log = logging.getLogger(__name__)
# websockets logs the handshake at DEBUG; the socket URL is a capability for the call.
_WIRE_LOG = logging.getLogger("callbridge.providers.wire.vapi")
_WIRE_LOG.setLevel(logging.INFO)

NAME: Final = "vapi"
DEFAULT_BASE_URL: Final = "https://api.vapi.ai"
AUDIO_FORMAT: Final = {"format": "mulaw", "container": "raw", "sampleRate": 8000}
_HANGUP: Final = json.dumps({"type": "hangup"})
_RETRYABLE_STATUS: Final = frozenset({408, 409, 425, 429})

class VapiConfig(BaseModel):
    """The assistant file's ``vapi:`` block."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    assistant_id: str | None = Field(None, min_length=1)
    assistant: dict[str, Any] | None = None
    base_url: str | None = None
    clear_on_user_speech: bool = Field(
        True, description="caller speech over the bot clears the line before VAPI decides"
    )
    connect_timeout_s: float = Field(10.0, gt=0, le=60)
    outbox_frames: int = Field(250, ge=10, le=5000, description="caller audio held if stalled")

    @model_validator(mode="after")
    def _one_assistant(self) -> Self:
        if (self.assistant_id is None) == (self.assistant is None):
            raise ValueError("give exactly one of assistantId or assistant")
        return self


class VapiAgent:
    """Built once per process; each phone call opens its own VAPI call and socket."""

    name = NAME

    def __init__(
        self,
        config: VapiConfig,
        *,
        api_key: str,
        base: str,
        http: httpx.AsyncClient | None = None,
        retry_delays_s: Sequence[float] = DEFAULT_DELAYS_S,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config
        self.base = base
        self._api_key = api_key
        self._http = http or httpx.AsyncClient(timeout=config.connect_timeout_s, trust_env=False)
        self._delays = tuple(retry_delays_s)
        self._sleep = sleep

    def call_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "transport": {"provider": "vapi.websocket", "audioFormat": dict(AUDIO_FORMAT)}
        }
        if self.config.assistant_id is not None:
            body["assistantId"] = self.config.assistant_id
        else:
            body["assistant"] = self.config.assistant
        return body

    async def open_session(self, *, on_retry: OnRetry | None = None) -> VapiSession:
        """Create the call and connect its socket; retried on errors a retry can fix
        (each retry told to ``on_retry``: the call's record)."""
        return await retry_call(
            self._open_once, delays_s=self._delays, sleep=self._sleep, on_retry=on_retry
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _open_once(self) -> VapiSession:
        call_id, url = await self._create_call()
        try:
            ws = await connect(
                url,
                compression=None,  # 20 ms audio frames: deflate costs CPU, saves nothing
                open_timeout=self.config.connect_timeout_s,
                close_timeout=1.0,
                max_size=2**20,
                logger=_WIRE_LOG,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ProviderError(
                NAME,
                f"call {call_id}: socket upgrade refused with HTTP {status}",
                retryable=status >= 500 or status in _RETRYABLE_STATUS,
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ProviderError(NAME, f"call {call_id}: cannot connect: {exc!r}",
                                retryable=True) from exc
        log.info("vapi.connected call_id=%s", call_id)
        return VapiSession(ws, call_id=call_id, outbox_frames=self.config.outbox_frames)

    async def _create_call(self) -> tuple[str, str]:
        try:
            response = await self._http.post(
                f"{self.base}/call",
                json=self.call_body(),
                headers={"Authorization": f"Bearer {self._api_key}"},
            )
        except httpx.TimeoutException as exc:
            raise ProviderError(NAME, "POST /call timed out", retryable=True) from exc
        except httpx.TransportError as exc:
            raise ProviderError(NAME, f"POST /call failed: {exc!r}", retryable=True) from exc
        if response.is_error:
            status = response.status_code
            detail = response.text.strip()[:300] or "(no body)"
            if status == 401:
                detail = "the API key (VAPI_API_KEY) was refused"
            raise ProviderError(NAME, f"POST /call answered HTTP {status}: {detail}",
                                retryable=status >= 500 or status in _RETRYABLE_STATUS)
        try:
            call = response.json()
            call_id = str(call.get("id", "?"))
            url = call["transport"]["websocketCallUrl"]
            if not isinstance(url, str) or not url:
                raise TypeError("websocketCallUrl is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(
                NAME, f"POST /call answer has no transport.websocketCallUrl: {exc!r}",
                retryable=False,
            ) from exc
        return call_id, socket_url(self.base, url)


class VapiSession:
    """One VAPI call's socket: the ``RemoteSession`` the bridge drives."""

    def __init__(self, ws: ClientConnection, *, call_id: str, outbox_frames: int) -> None:
        self.call_id = call_id
        self.ended_reason: str | None = None
        self.dropped_frames = 0
        self._ws = ws
        self._outbox: deque[bytes | str] = deque()
        self._outbox_frames = outbox_frames
        self._audio_queued = 0
        self._wake = asyncio.Event()
        self._inbox: Inbox[RemoteEvent] = Inbox()
        self._hanging_up = False
        self._ended_emitted = False
        self._sender = asyncio.create_task(self._send_loop(), name="vapi.send")
        self._receiver = asyncio.create_task(self._receive_loop(), name="vapi.receive")

    def push_audio(self, ulaw: bytes) -> None:
        """Queue one caller frame; never blocks. A stalled socket drops the oldest audio."""
        if not ulaw or self._hanging_up or self._sender.done():
            return
        if self._audio_queued >= self._outbox_frames:
            for index, item in enumerate(self._outbox):
                if isinstance(item, bytes):
                    del self._outbox[index]
                    self._audio_queued -= 1
                    self.dropped_frames += 1
                    break
            if self.dropped_frames == 1 or self.dropped_frames % 500 == 0:
                log.warning("vapi.outbox_overflow dropped_frames=%d", self.dropped_frames)
        self._outbox.append(ulaw)
        self._audio_queued += 1
        self._wake.set()

    def events(self) -> AsyncIterator[RemoteEvent]:
        """Agent audio and signals until the call ends; a dropped socket raises."""
        return self._inbox.events()

    async def hangup(self) -> None:
        """Tell VAPI to end the call (``{"type": "hangup"}``), then close the socket."""
        if not self._hanging_up:
            self._hanging_up = True
            self._outbox.append(_HANGUP)
            self._wake.set()
            await asyncio.wait({self._sender}, timeout=1.0)
        await self.aclose()

    async def aclose(self) -> None:
        self._hanging_up = True
        for task in (self._sender, self._receiver):
            task.cancel()
        await asyncio.wait({self._sender, self._receiver})
        await self._ws.close()
        self._inbox.end()

    async def _send_loop(self) -> None:
        try:
            while True:
                if not self._outbox:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                item = self._outbox.popleft()
                if isinstance(item, bytes):
                    self._audio_queued -= 1
                await self._ws.send(item)
                if item is _HANGUP:
                    return
        except ConnectionClosed:
            return  # the receiver reports how the socket ended

    async def _receive_loop(self) -> None:
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    if message:
                        self._inbox.put(message)
                    continue
                signal = self._parse(message)
                if signal is not None:
                    self._inbox.put(signal)
        except ConnectionClosed:
            pass
        finally:
            self._on_closed()

    def _on_closed(self) -> None:
        """A close after VAPI said the call ended, or after our hang-up, is the normal end;
        any other close lost the call mid-way (VAPI cannot resume it)."""
        failure: ProviderError | None = None
        if not self._ended_emitted and not self._hanging_up:
            code, reason = self._ws.close_code, self._ws.close_reason or ""
            if code == 1000:
                self._ended_emitted = True
                self.ended_reason = f"socket closed: {reason or 'normal'}"
                self._inbox.put("ended")
            else:
                failure = ProviderError(
                    NAME, f"call {self.call_id}: socket closed with code {code} {reason!r}",
                    retryable=True,
                )
                log.warning("vapi.dropped call_id=%s code=%s", self.call_id, code)
        self._inbox.end(failure)

    def _parse(self, text: str) -> RemoteSignal | None:
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("vapi.malformed_message head=%r", text[:80])
            return None
        if not isinstance(message, dict):
            log.warning("vapi.malformed_message head=%r", text[:80])
            return None
        signal = classify(message)
        if signal == "ended":
            if self._ended_emitted:
                return None  # status-update, then end-of-call-report: say it once
            self._ended_emitted = True
            inner = _unwrap(message)
            self.ended_reason = str(inner.get("endedReason") or inner.get("type"))
            log.info("vapi.ended call_id=%s reason=%s", self.call_id, self.ended_reason)
        elif signal is None:
            log.debug("vapi.message type=%r", message.get("type"))
        return signal


def classify(message: Mapping[str, Any]) -> RemoteSignal | None:
    """What one VAPI JSON message means for the line (None: nothing).

    Accepts the message bare (``{"type": …}``) or wrapped as Server URL events are
    (``{"message": {"type": …}}``).
    """
    message = _unwrap(message)
    kind, status, role = message.get("type"), message.get("status"), message.get("role")
    if kind == "user-interrupted":
        return "interrupted"
    if kind == "speech-update" and status == "started":
        return "user-started" if role == "user" else "bot-started"
    if kind == "speech-update" and status == "stopped" and role == "assistant":
        return "bot-stopped"
    if (kind == "status-update" and status == "ended") or kind == "end-of-call-report":
        return "ended"
    return None


def _unwrap(message: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = message.get("message")
    return inner if isinstance(inner, Mapping) and "type" not in message else message


def socket_url(base: str, returned: str) -> str:
    """The socket to open: VAPI's absolute ``wss://`` URL as given; a relative one is on
    the API's host; ``http(s)`` becomes ``ws(s)`` (a proxy or a local fake)."""
    return to_websocket_url(urljoin(base + "/", returned))


def build(config: VapiConfig, env: Mapping[str, str]) -> VapiAgent:
    key = require_key(env, "VAPI_API_KEY", NAME)
    base = base_url(config.base_url, env, "VAPI_BASE_URL", DEFAULT_BASE_URL)
    return VapiAgent(config, api_key=key, base=base)
