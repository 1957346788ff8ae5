"""Deepgram live transcription over its WebSocket (``/v1/listen``).

How it works: ``open_stream`` connects (``Authorization: Token``, query parameters, no
permessage-deflate). ``push_audio`` and ``finalize`` append to a bounded outbox (μ-law
frames, control messages) and write what is due at once from the caller's stack
(``VendorConnection.send_nowait``, providers/ws_client.py: no task hop, no ``drain``, a
pooled mask), so the call's owner task never waits on the vendor. Only when the socket
pushes back (write buffer full) or is closing does the sender task take over and
``await`` each send; the outbox fills behind it and, when full, its oldest audio is
dropped and counted. A receiver task turns server JSON into base.py events. One timer
per stream sends ``KeepAlive`` when nothing went out for a few seconds (Deepgram closes
an idle socket after ~10 s).

Audio goes out in chunks of ``chunkMs`` (40 ms: two Twilio frames; Deepgram takes any
length and recommends 20–250 ms): each message costs a header, a mask and a write system
call, and at a hundred calls 20 ms messages were a sixth of the server
(``bench/vendors.py stt``). Not longer by default: the interims come a chunk later, and
barge-in waits for the words once an interim said there were none yet (100 ms chunks
put clear p95 at 222/282 ms at 1/20 seed calls against 202/226 ms at 40 ms, with no
server CPU to show for it in ``bench/load.py --stack seed``). A lone frame waits at most
``chunkMs`` for its partners; ``Finalize`` and ``CloseStream`` flush what waits first, so
the end of a turn never waits on a chunk. That wait's timer is armed when a part-chunk
starts waiting and never cancelled: when it fires it sends what has waited a whole
chunk's time, or waits again for what came since (arming and cancelling one every
message was a sixth of this client's CPU at 80 calls).

While the caller is quiet (the engine says so through ``caller_quiet``: no speech for a
while) the chunk is ``quietChunkMs`` (200 ms, inside Deepgram's 20–250 ms): a fifth of
the messages, and nothing waits on that audio (``Finalize`` and ``CloseStream`` flush it
first as ever). The moment the caller speaks again what is held goes out in one message
before ``caller_quiet(False)`` returns, and the cadence is ``chunkMs`` again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Final, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from callbridge.errors import ProviderError
from callbridge.providers.base import SttEvent
from callbridge.providers.env import base_url, require_key
from callbridge.providers.inbox import Inbox
from callbridge.providers.registry import ProviderBlock, ProviderSpec
from callbridge.providers.retry import OnRetry
from callbridge.providers.stt.deepgram_wire import (
    CLOSE_STREAM,
    FINALIZE,
    KEEPALIVE,
    MALFORMED,
    decode,
    listen_url,
)
from callbridge.providers.ws_client import VendorConnection

__all__ = ["SPEC", "DeepgramConfig", "DeepgramSTT", "DeepgramStream", "listen_url"]

log = logging.getLogger(__name__)

# websockets logs handshake headers (our API key) at DEBUG; a logger pinned at INFO
# keeps them out of the logs whatever the root level is.
_WIRE_LOG = logging.getLogger("callbridge.providers.wire.deepgram")
_WIRE_LOG.setLevel(logging.INFO)

NAME: Final = "deepgram"
DEFAULT_BASE_URL: Final = "https://api.deepgram.com"
_TIMER_SLACK_S: Final = 0.001  # uvloop's timers have 1 ms resolution
# Upgrade statuses where a later attempt can succeed.
_RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
# Close codes that mean our data or request was refused: the same bytes fail again.
_FATAL_CLOSE: Final = frozenset({1002, 1003, 1007, 1008, 1009, 1010})


class DeepgramConfig(ProviderBlock):
    """The ``transcriber`` block: VAPI's field names where VAPI has one."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    provider: Literal["deepgram"] = "deepgram"
    model: str = "nova-2"
    language: str | None = "en-US"
    endpointing: int = Field(300, ge=10, le=10000, description="Deepgram's own endpointing, ms")
    utterance_end_ms: int = Field(1000, ge=1000, le=5000)
    smart_format: bool = True
    base_url: str | None = None
    keepalive_s: float = Field(4.0, gt=0, le=9, description="idle gap before a KeepAlive")
    outbox_frames: int = Field(250, ge=10, le=5000, description="audio buffered if stalled")
    chunk_ms: int = Field(40, ge=20, le=250, description="audio per binary message")
    quiet_chunk_ms: int = Field(
        200, ge=20, le=250, description="audio per message while the caller is quiet"
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=60)


class DeepgramSTT:
    """Built once per process; each call opens its own stream (socket)."""

    name = NAME

    def __init__(self, config: DeepgramConfig, *, api_key: str, url: str) -> None:
        self.config = config
        self._api_key = api_key
        self.url = url

    async def open_stream(self, *, on_retry: OnRetry | None = None) -> DeepgramStream:
        """Opening is retried by the caller (the engine's link); nothing inside retries."""
        try:
            ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Token {self._api_key}"},
                compression=None,
                open_timeout=self.config.connect_timeout_s,
                close_timeout=1.0,
                logger=_WIRE_LOG,
                create_connection=VendorConnection,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            detail = exc.response.headers.get("dg-error") or _body_text(exc.response.body)
            raise ProviderError(
                NAME,
                f"upgrade refused with HTTP {status}: {detail}",
                retryable=status >= 500 or status in _RETRYABLE_STATUS,
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ProviderError(NAME, f"cannot connect: {exc!r}", retryable=True) from exc
        assert isinstance(ws, VendorConnection)
        return DeepgramStream(
            ws,
            keepalive_s=self.config.keepalive_s,
            outbox_frames=self.config.outbox_frames,
            chunk_ms=self.config.chunk_ms,
            quiet_chunk_ms=self.config.quiet_chunk_ms,
        )


class DeepgramStream:
    """One call's live transcription (``SpeechToTextStream``)."""

    def __init__(
        self, ws: VendorConnection, *, keepalive_s: float, outbox_frames: int,
        chunk_ms: int = 40, quiet_chunk_ms: int = 200,
    ) -> None:
        self._ws = ws
        self._loop = asyncio.get_running_loop()
        self._keepalive_s = keepalive_s
        self._outbox_frames = outbox_frames
        self._speech_bytes = chunk_ms * 8  # μ-law 8 kHz: 8 bytes a millisecond
        # A quiet chunk fits in the outbox, else its oldest frames would be dropped.
        self._quiet_bytes = max(self._speech_bytes, min(quiet_chunk_ms * 8, outbox_frames * 160))
        self._chunk_bytes = self._speech_bytes  # the cadence now: the speech one until told
        self._chunk_wait_s = chunk_ms / 1000.0
        self._quiet = False
        self._outbox: deque[bytes | str] = deque()
        self._audio_queued = 0  # frames in the outbox
        self._audio_bytes = 0  # their bytes
        self._controls_queued = 0  # text messages in the outbox (they flush the audio)
        self._flush_due = False  # a lone frame waited its chunk's time: send it short
        self._lone_timer: asyncio.TimerHandle | None = None
        self._lone_since: float | None = None  # when the part-chunk queued began waiting
        self._sent_at = self._loop.time()
        self._held: bytes | str | None = None  # taken from the outbox, for the sender task
        self._sending = False  # the sender task owns the socket until the outbox is empty
        self._ended = False  # CloseStream went out: nothing more may
        self._wake = asyncio.Event()
        self._events: Inbox[SttEvent] = Inbox()
        self._closing = False
        self.dropped_frames = 0
        self.malformed_messages = 0
        self.keepalives_sent = 0
        self._sender = asyncio.create_task(self._send_loop(), name="deepgram.send")
        self._receiver = asyncio.create_task(self._receive_loop(), name="deepgram.receive")
        self._keepalive_timer = self._loop.call_later(keepalive_s, self._keepalive_due)

    # ------------------------------------------------------------ engine side

    def push_audio(self, ulaw: bytes) -> None:
        """Queue one μ-law frame as it came from Twilio; never blocks."""
        if not ulaw or self._closing or self._events.failure is not None:
            return  # an empty binary frame makes Deepgram close the stream
        if self._audio_queued >= self._outbox_frames:
            self._drop_oldest_audio()
        self._outbox.append(ulaw)
        self._audio_queued += 1
        self._audio_bytes += len(ulaw)
        if self._audio_bytes >= self._chunk_bytes:
            self._pump()
        elif self._lone_since is None:
            self._lone_waiting()

    def caller_quiet(self, quiet: bool) -> None:
        """Quiet: the next messages wait for ``quietChunkMs`` of audio (or that long).
        Speech: what is held goes now, in one message, and the cadence is ``chunkMs``."""
        if quiet is self._quiet:
            return
        self._quiet = quiet
        if quiet:
            self._chunk_bytes = self._quiet_bytes
            self._chunk_wait_s = self._quiet_bytes / 8000.0
            return
        if self._audio_bytes:
            self._flush_due = True  # everything held: it is at most one quiet chunk
            self._pump()
        self._chunk_bytes = self._speech_bytes
        self._chunk_wait_s = self._speech_bytes / 8000.0
        if self._lone_timer is not None:  # armed for a quiet wait: too late for speech
            self._lone_timer.cancel()
            self._lone_timer = None
            if self._lone_since is not None:  # (the socket pushed back) it waits the rest
                self._lone_timer = self._loop.call_later(self._chunk_wait_s, self._lone_waited)

    def finalize(self) -> None:
        """Ask Deepgram to flush what it heard now (it answers with ``from_finalize``)."""
        if self._closing or self._events.failure is not None:
            return
        self._queue_control(FINALIZE)

    def events(self) -> AsyncIterator[SttEvent]:
        return self._events.events()

    async def aclose(self) -> None:
        """Send ``CloseStream``, give Deepgram a moment to flush its finals, then close."""
        if not self._closing:
            self._closing = True
            self._queue_control(CLOSE_STREAM)
            await asyncio.wait({self._receiver}, timeout=1.5)
        self._keepalive_timer.cancel()
        if self._lone_timer is not None:
            self._lone_timer.cancel()
        for task in (self._sender, self._receiver):
            task.cancel()
        await asyncio.wait({self._sender, self._receiver})
        await self._ws.close()
        self._events.end()

    # ------------------------------------------------------------ socket side

    def _queue_control(self, message: str) -> None:
        self._outbox.append(message)
        self._controls_queued += 1
        self._pump()

    def _lone_waiting(self) -> None:
        """A part-chunk starts waiting for its partners now."""
        self._lone_since = self._loop.time()
        if self._lone_timer is None:
            self._lone_timer = self._loop.call_later(self._chunk_wait_s, self._lone_waited)

    def _lone_waited(self) -> None:
        self._lone_timer = None
        if self._lone_since is None:
            return  # what waited went out with its partners
        left = self._lone_since + self._chunk_wait_s - self._loop.time()
        if left > _TIMER_SLACK_S:  # a younger part-chunk: the rest of its wait
            self._lone_timer = self._loop.call_later(left, self._lone_waited)
            return
        self._flush_due = True
        self._pump()

    def _keepalive_due(self) -> None:
        """Deepgram closes a socket idle for ~10 s: say something if nothing went out."""
        idle = self._loop.time() - self._sent_at
        if idle >= self._keepalive_s * 0.99 and not self._outbox:
            self._queue_control(KEEPALIVE)
            idle = 0.0
        self._keepalive_timer = self._loop.call_later(
            max(self._keepalive_s - idle, 0.001), self._keepalive_due
        )

    def _drop_oldest_audio(self) -> None:
        for index, item in enumerate(self._outbox):
            if isinstance(item, bytes):
                del self._outbox[index]
                self._audio_queued -= 1
                self._audio_bytes -= len(item)
                self.dropped_frames += 1
                if self.dropped_frames == 1 or self.dropped_frames % 500 == 0:  # ~10 s of audio
                    log.warning("deepgram.outbox_overflow dropped_frames=%d", self.dropped_frames)
                return

    def _pump(self) -> None:
        """Write what is due now, unless the sender task owns the socket; hand it the
        rest when the socket pushes back."""
        if self._sending or self._ended:
            return
        while (message := self._next_message()) is not None:
            if not self._ws.send_nowait(message):
                self._held = message
                self._sending = True
                self._wake.set()
                return
            self._sent(message)
            if message is CLOSE_STREAM:
                return

    def _sent(self, message: bytes | str) -> None:
        self._sent_at = self._loop.time()
        if message is KEEPALIVE:
            self.keepalives_sent += 1
        elif message is CLOSE_STREAM:
            self._ended = True

    async def _send_loop(self) -> None:
        """Sends that must wait (a full write buffer, a closing socket), in order."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                message, self._held = self._held, None
                while message is not None:
                    await self._ws.send(message)
                    self._sent(message)
                    if self._ended:
                        return
                    message = self._next_message()
                self._sending = False
        except ConnectionClosed:
            return  # the receiver reports why the socket closed

    def _next_message(self) -> bytes | str | None:
        """The next message that is due, in order: a control message, or a chunk of the
        audio queued — full, or short when a control message waits behind it or its lone
        frame has waited a chunk's time; None while a lone frame still waits."""
        if not self._outbox:
            return None
        head = self._outbox[0]
        if isinstance(head, str):
            self._outbox.popleft()
            self._controls_queued -= 1
            return head
        if self._audio_bytes < self._chunk_bytes and not (
            self._flush_due or self._controls_queued
        ):
            return None
        self._flush_due = False
        outbox, chunk_bytes = self._outbox, self._chunk_bytes
        parts: list[bytes] = []
        size = 0
        while size < chunk_bytes and outbox and isinstance(head := outbox[0], bytes):
            outbox.popleft()
            parts.append(head)
            size += len(head)
        self._audio_queued -= len(parts)
        self._audio_bytes -= size
        self._lone_since = None
        if 0 < self._audio_bytes < chunk_bytes:
            self._lone_waiting()  # what is left waits from now
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _receive_loop(self) -> None:
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    log.warning("deepgram.unexpected_binary bytes=%d", len(message))
                    continue
                event = self._parse(message)
                if event is not None:
                    self._events.put(event)
        except ConnectionClosed:
            pass  # close code examined below
        finally:
            self._on_closed()

    def _on_closed(self) -> None:
        """After ``aclose`` any close is expected; before it, any close is a failure
        (the engine needs the stream for the whole call)."""
        if not self._closing:
            code, reason = self._ws.close_code, self._ws.close_reason or ""
            retryable = code not in _FATAL_CLOSE
            log.warning("deepgram.closed code=%s reason=%s retryable=%s", code, reason, retryable)
            self._events.end(
                ProviderError(
                    NAME, f"closed the stream: code {code} {reason!r}", retryable=retryable
                )
            )
            return
        self._events.end()

    def _parse(self, text: str) -> SttEvent | None:
        try:
            kind, message, event = decode(text)
        except MALFORMED as exc:
            self.malformed_messages += 1
            log.warning(
                "deepgram.malformed_message count=%d error=%r head=%r",
                self.malformed_messages,
                exc,
                text[:80],
            )
            return None
        if event is None:
            if kind == "Metadata":
                log.debug("deepgram.metadata request_id=%s", message.get("request_id"))
            elif kind == "Error" or "err_code" in message:
                log.warning("deepgram.error_message %s", message)
            else:
                log.info("deepgram.unknown_message type=%r", kind)
        return event


def _body_text(body: bytes | bytearray | None) -> str:
    return (body or b"").decode("utf-8", "replace").strip()[:200] or "(no body)"


def build(config: DeepgramConfig, env: Mapping[str, str]) -> DeepgramSTT:
    key = require_key(env, "DEEPGRAM_API_KEY", "deepgram")
    base = base_url(config.base_url, env, "DEEPGRAM_BASE_URL", DEFAULT_BASE_URL)
    return DeepgramSTT(config, api_key=key, url=listen_url(config, base))


SPEC = ProviderSpec(kind="stt", name=NAME, config=DeepgramConfig, build=build)
