"""One ElevenLabs ``multi-stream-input`` socket per call: no connection set-up on a turn.

How it works: ``ElevenLabsCall`` starts connecting when the call starts (TLS and the
upgrade cost a vendor round trip or three, which used to be paid by every sentence).
Each ``synthesize(text)`` is one context on that socket: ``{"text": " ", "context_id",
"voice_settings"}``, the text with ``flush``, then ``close_context`` at once, so the
vendor answers the context's audio and then ``{"isFinal": true, "contextId"}``, which is
exactly where the segment ends. Cancelling the consumer (barge-in) forgets the context:
its late audio is dropped on arrival, the socket stays. A context counts against the
vendor's limit of 5 until its ``isFinal``; a sixth waits for one to finish. While idle,
``{"text": "", "context_id"}`` every ``keepalive_s`` keeps the socket inside its
``inactivity_timeout``. If the socket drops, the contexts in flight fail (retryable, so
the reply's retry asks again) and a new socket is opened in the background at once. A
socket that says nothing at all for a whole read timeout while a context waits on it is
stalled, not just late: it is dropped the same way, so the retry asks a new one instead
of waiting on the dead one again.

An audio answer arrives ten times a second while the bot speaks, and most of its JSON is
the character alignment we never read: ``audio_fields`` takes the two fields we need
straight from the text when the message has the vendor's usual shape, and anything else
goes through ``json.loads`` as before.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from callbridge.errors import ProviderError

if TYPE_CHECKING:
    from callbridge.providers.tts.elevenlabs import ElevenLabsTTS

__all__ = ["MAX_CONTEXTS", "ElevenLabsCall", "audio_fields", "multi_stream_url"]

log = logging.getLogger(__name__)

NAME: Final = "11labs"
MAX_CONTEXTS: Final = 5
INACTIVITY_TIMEOUT_S: Final = 60
_RECONNECT_DELAYS_S: Final = (0.0, 0.5, 1.0, 2.0, 4.0)
_FINAL: Final = object()


class ElevenLabsCall:
    """A ``TextToSpeech`` bound to one call's socket; ``aclose`` when the call ends."""

    name = NAME

    def __init__(self, owner: ElevenLabsTTS, *, keepalive_s: float = 15.0) -> None:
        self._owner = owner
        self._url = multi_stream_url(owner.url)
        self._keepalive_s = keepalive_s
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._failure: ProviderError | None = None
        self._contexts: dict[str, asyncio.Queue[object]] = {}
        self._open: set[str] = set()  # contexts the vendor still counts (no isFinal yet)
        self._room = asyncio.Condition()
        self._counter = 0
        self._heard_at = 0.0  # loop time of the socket's last message
        self._closing = False
        self.connections = 0
        self._task = asyncio.create_task(self._maintain(), name="elevenlabs.socket")

    # ------------------------------------------------------------ TextToSpeech

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        ws = await self._socket()
        self._counter += 1
        context_id = f"s{self._counter}"
        queue: asyncio.Queue[object] = asyncio.Queue()
        read_timeout = self._owner.config.read_timeout_s
        try:
            async with asyncio.timeout(read_timeout), self._room:
                await self._room.wait_for(lambda: len(self._open) < MAX_CONTEXTS)
                self._open.add(context_id)
        except TimeoutError:
            raise ProviderError(
                NAME, f"{MAX_CONTEXTS} contexts still open after {read_timeout:g} s",
                retryable=True,
            ) from None
        self._contexts[context_id] = queue
        try:
            try:
                await ws.send(json.dumps({**self._owner.opening(), "context_id": context_id}))
                await ws.send(json.dumps(
                    {"text": text.strip() + " ", "context_id": context_id, "flush": True}))
                await ws.send(json.dumps({"context_id": context_id, "close_context": True}))
            except ConnectionClosed as exc:
                raise ProviderError(NAME, f"socket closed: {exc}", retryable=True) from exc
            while True:
                try:
                    if queue.empty():  # a timeout only when there is something to wait for
                        async with asyncio.timeout(read_timeout):
                            item = await queue.get()
                    else:
                        item = queue.get_nowait()
                except TimeoutError:
                    await self._forget(context_id)  # the vendor lost it: free its slot
                    self._drop_if_silent(ws, read_timeout)
                    raise ProviderError(
                        NAME, f"no answer for {read_timeout:g} s", retryable=True
                    ) from None
                if item is _FINAL:
                    return
                if isinstance(item, ProviderError):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            # Cancelled (barge-in) or done: late audio of this context is dropped on arrival.
            self._contexts.pop(context_id, None)

    async def _forget(self, context_id: str) -> None:
        async with self._room:
            self._open.discard(context_id)
            self._room.notify_all()

    def _drop_if_silent(self, ws: ClientConnection, read_timeout: float) -> None:
        """Nothing on the socket for ``read_timeout``: stalled. Forget it now (the next
        sentence waits for the new one) and abort it, so ``_maintain`` reconnects."""
        if asyncio.get_running_loop().time() - self._heard_at < 0.9 * read_timeout:
            return  # other contexts are answered: only this one was lost
        log.warning("elevenlabs.socket_stalled silent_s=%.1f", read_timeout)
        if self._ws is ws:
            self._ws = None
            self._connected.clear()
        ws.transport.abort()

    async def aclose(self) -> None:
        """The call is over: close the socket politely, stop reconnecting."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"close_socket": True}))
        self._task.cancel()
        await asyncio.wait({self._task})
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await ws.close()

    # ------------------------------------------------------------ the socket

    async def _socket(self) -> ClientConnection:
        timeout = self._owner.config.connect_timeout_s
        if self._failure is not None and not self._failure.retryable:
            raise self._failure  # a bad key fails the same way every time: say so now
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            failure = self._failure
            raise failure or ProviderError(
                NAME, f"no socket within {timeout:g} s", retryable=True) from None
        assert self._ws is not None
        return self._ws

    async def _maintain(self) -> None:
        """Connect, serve, and reconnect when the socket drops, until the call ends."""
        failures = 0
        while not self._closing:
            try:
                ws = await self._owner.connect(self._url)
            except ProviderError as exc:
                self._failure = exc
                if not exc.retryable:
                    log.error("elevenlabs.connect_refused error=%s", exc)
                    return  # a bad key or voice: every sentence reports it, none retries
                delay = _RECONNECT_DELAYS_S[min(failures, len(_RECONNECT_DELAYS_S) - 1)]
                failures += 1
                log.warning("elevenlabs.connect_failed attempt=%d retry_in_s=%.1f error=%s",
                            failures, delay, exc)
                await asyncio.sleep(max(delay, 0.1))
                continue
            failures = 0
            self.connections += 1
            self._heard_at = asyncio.get_running_loop().time()
            self._ws, self._failure = ws, None
            self._connected.set()
            keepalive = asyncio.create_task(self._keep_alive(ws), name="elevenlabs.keepalive")
            try:
                await self._receive(ws)
            finally:
                keepalive.cancel()
                self._connected.clear()
                self._ws = None
            if not self._closing:
                await self._fail_contexts(ws)

    async def _keep_alive(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self._keepalive_s)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"text": "", "context_id": f"s{self._counter}"}))

    async def _receive(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                self._heard_at = asyncio.get_running_loop().time()
                if isinstance(message, bytes):
                    continue
                if (fields := audio_fields(message)) is not None:
                    self._deliver(*fields)
                    continue
                data = self._owner.parse(message)
                if data is None:
                    continue
                if data.get("isFinal") is True:
                    await self._finished(data.get("contextId"))
                else:
                    self._route(data)

    async def _finished(self, context_id: object) -> None:
        if context_id in self._open:
            async with self._room:
                self._open.discard(str(context_id))
                self._room.notify_all()
        queue = self._contexts.get(str(context_id))
        if queue is not None:
            queue.put_nowait(_FINAL)

    def _route(self, data: dict[str, Any]) -> None:
        audio = data.get("audio")
        if audio:
            self._deliver(str(audio), str(data.get("contextId")))
        elif "error" in data or "message" in data:
            log.warning("elevenlabs.error_message error=%s message=%s",
                        data.get("error"), str(data.get("message"))[:200])

    def _deliver(self, audio: str, context_id: str) -> None:
        """Audio to its context's queue (decoded: ``a2b_base64`` validates in C, where
        ``b64decode(validate=True)`` runs a regex over every chunk first)."""
        queue = self._contexts.get(context_id)
        if queue is None:
            return  # a forgotten (interrupted) context: nobody may hear it
        try:
            queue.put_nowait(binascii.a2b_base64(audio, strict_mode=True))
        except (binascii.Error, ValueError) as exc:
            queue.put_nowait(ProviderError(NAME, f"audio is not base64: {exc}", retryable=True))

    async def _fail_contexts(self, ws: ClientConnection) -> None:
        code, reason = ws.close_code, ws.close_reason or ""
        log.warning("elevenlabs.socket_dropped code=%s reason=%s open_contexts=%d",
                    code, reason, len(self._contexts))
        error = ProviderError(NAME, f"socket closed: code {code} {reason}".strip(),
                              retryable=True)
        for queue in self._contexts.values():
            queue.put_nowait(error)
        async with self._room:
            self._open.clear()  # the vendor forgot them with the socket
            self._room.notify_all()


_AUDIO_KEY: Final = '{"audio":'
_CONTEXT_KEY: Final = '"contextId":'


def audio_fields(text: str) -> tuple[str, str] | None:
    """``(audio, contextId)`` of an audio answer read without parsing the rest, or None
    when the message is not plainly one (then it goes through ``json.loads``).

    Safe because of how JSON is written: a quote inside a string is always escaped, so
    an unescaped ``"contextId":`` can only be a key, and base64 has no quote or
    backslash (one in the slice means an escape we do not decode: fall back)."""
    if not text.startswith(_AUDIO_KEY) or text[-1] != "}":
        return None
    start = text.find('"', len(_AUDIO_KEY))
    if start < 0 or text[len(_AUDIO_KEY) : start].strip():
        return None  # not a string value
    end = text.find('"', start + 1)
    key = text.rfind(_CONTEXT_KEY, end)
    if end < 0 or key < 0 or text[key - 1] == "\\":
        return None
    first = text.find('"', key + len(_CONTEXT_KEY))
    last = text.find('"', first + 1)
    if first < 0 or last < 0 or text[key + len(_CONTEXT_KEY) : first].strip():
        return None
    audio, context_id = text[start + 1 : end], text[first + 1 : last]
    if not audio or "\\" in audio or "\\" in context_id:
        return None
    final = text.find('"isFinal"', end)
    if final >= 0 and not text[final + 9 :].lstrip(": ").startswith("null"):
        return None  # the end of a context: the full path handles it
    return audio, context_id


def multi_stream_url(stream_input_url: str) -> str:
    """The call socket's URL: ``stream-input`` → ``multi-stream-input``, with the
    inactivity timeout raised so keep-alives can be rare."""
    parts = urlsplit(stream_input_url)
    path = parts.path.removesuffix("/stream-input") + "/multi-stream-input"
    query = parts.query + "&" + urlencode({"inactivity_timeout": INACTIVITY_TIMEOUT_S})
    return urlunsplit((parts.scheme, parts.netloc, path, query.lstrip("&"), ""))
