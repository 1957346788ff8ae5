"""A fake Deepgram live-transcription server (``GET /v1/listen`` upgraded to WebSocket).

Follows developers.deepgram.com: the streaming API reference (query parameters, Results /
SpeechStarted / UtteranceEnd / Metadata shapes), "KeepAlive", "Finalize" and "CloseStream"
control messages, and the "STT troubleshooting WebSocket, NET and DATA errors" page
(HTTP 4xx on the upgrade with ``dg-error``; close 1011 ``NET-0001`` after ~10 s without
data; an empty binary frame ends the stream).

It cannot hear: each connection replays ``transcripts`` in order, one per utterance.
An utterance starts with the first *non-silent* μ-law frame (``SpeechStarted``), gets one
interim result after ``interim_after_frames`` speech frames, and ends with a final result
on ``Finalize`` (``from_finalize: true``) or, if ``endpointing_frames`` is set, after that
many silent frames (``speech_final: true``), followed by ``UtteranceEnd``.

Realistic timing (off by default, so tests stay fast; the latency benchmark turns it on):
``endpointing_from_request`` ends an utterance after the request's own ``endpointing`` ms
of silence, as Deepgram does; ``final_latency_s`` is how long the final takes after that
endpoint or after ``Finalize`` (the socket keeps taking audio meanwhile);
``interim_every_frames`` sends a growing interim every that many frames while an
utterance is open (during a pause it already holds every word); ``new_connection_s`` is
what opening a socket costs (TCP + TLS to a vendor far away), paid before the upgrade
answer. ``lean_socket`` serves the same protocol on ``_lean_ws`` instead of websockets'
asyncio server: a fraction of the CPU a message, for the load benchmark's client core.
``Finalize`` ends the scripted utterance wherever the speaker is: a sentence spoken with
a pause longer than the client's Finalize delay must be scripted as two utterances.
Before ``first_word_s`` of speech Deepgram has recognised nothing yet and the interim
is empty (``"transcript": ""``), as on a real stream.
Not modelled: word timings beyond a flat split, confidence, multichannel, diarization,
keyterms, ``Metadata`` fields other than the ids, and the 2 s Finalize dedup window.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fakes._ws import port_of, refuse
from fakes.deepgram_request import _speech, listen_request_verdict

_FRAME_BYTES = 160  # 20 ms of μ-law 8 kHz: the unit the fake's counts and timings use


@dataclass
class DeepgramSession:
    """What one connection sent, for assertions."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    audio: bytearray = field(default_factory=bytearray)
    frames: int = 0  # 20 ms frames of audio, however the client chunked them
    audio_messages: int = 0  # binary messages
    controls: list[str] = field(default_factory=list)
    # Every message in arrival order: a binary one as its length, a control one by type.
    messages: list[int | str] = field(default_factory=list)
    finals_sent: int = 0
    frames_handled: int = 0  # audio frames fully answered (their results already sent)
    sent: list[dict[str, Any]] = field(default_factory=list)  # every JSON message sent
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class FakeDeepgram:
    lean_by_default = False  # what ``lean_socket=None`` means (a test may flip it)

    def __init__(
        self,
        transcripts: Sequence[str] = (),
        *,
        api_key: str = "test-deepgram-key",
        interim_after_frames: int = 10,
        endpointing_frames: int | None = None,
        final_delay_s: float = 0.0,
        idle_timeout_s: float = 10.0,
        silence_level: int = 24,
        fail_upgrade: int | None = None,
        close_after_frames: int | None = None,
        close_code: int = 1011,
        close_reason: str = "NET-0000",
        malformed_after_frames: int | None = None,
        endpointing_from_request: bool = False,
        final_latency_s: float = 0.0,
        interim_every_frames: int | None = None,
        words_per_s: float = 3.0,
        first_word_s: float = 0.0,
        cycle: bool = False,
        new_connection_s: float = 0.0,
        lean_socket: bool | None = None,
    ) -> None:
        self.transcripts = list(transcripts)
        self.lean_socket = self.lean_by_default if lean_socket is None else lean_socket
        self.endpointing_from_request = endpointing_from_request
        self.final_latency_s = final_latency_s
        self.interim_every_frames = interim_every_frames
        self.words_per_s = words_per_s
        self.first_word_s = first_word_s
        self.cycle = cycle
        self.new_connection_s = new_connection_s
        self.api_key = api_key
        self.interim_after_frames = interim_after_frames
        self.endpointing_frames = endpointing_frames
        self.final_delay_s = final_delay_s
        self.idle_timeout_s = idle_timeout_s
        self.silence_level = silence_level
        self.fail_upgrade = fail_upgrade
        self.close_after_frames = close_after_frames
        self.close_code = close_code
        self.close_reason = close_reason
        self.malformed_after_frames = malformed_after_frames
        self.sessions: list[DeepgramSession] = []
        self.refused: list[int] = []
        self.connected = asyncio.Event()
        self._server: Server | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use 'async with FakeDeepgram(...)'"
        return f"http://127.0.0.1:{port_of(self._server)}"

    async def __aenter__(self) -> FakeDeepgram:
        if self.lean_socket:
            from fakes.deepgram_lean import serve_lean

            self._server = await serve_lean(self)  # type: ignore[assignment]
            return self
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._upgrade, compression=None
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    # ---------------------------------------------------------------- handshake

    async def _upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        """A socket is one connection: its set-up cost is paid before the upgrade answer
        (TCP + TLS happen before the request in real life; the client waits the same)."""
        if self.new_connection_s > 0:
            await asyncio.sleep(self.new_connection_s)
        return self._check_upgrade(connection, request)

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        request_id = str(uuid.uuid4())
        parts = urlsplit(request.path)
        status, message = self._verdict(parts.path, parse_qs(parts.query), request)
        if status is None:
            return None
        self.refused.append(status)
        code = {401: "INVALID_AUTH", 400: "Bad Request"}.get(status, "INTERNAL_SERVER_ERROR")
        return refuse(
            status,
            {"err_code": code, "err_msg": message, "request_id": request_id},
            {"dg-error": message, "dg-request-id": request_id},
        )

    def _verdict(
        self, path: str, query: dict[str, list[str]], request: Request
    ) -> tuple[int | None, str]:
        if self.fail_upgrade is not None:
            return self.fail_upgrade, "injected failure"
        return listen_request_verdict(
            path, query, request.headers.get("Authorization"), self.api_key
        )

    # ---------------------------------------------------------------- stream

    def open_session(self, request: Request) -> DeepgramSession:
        parts = urlsplit(request.path)
        session = DeepgramSession(
            path=parts.path,
            query={k: v[-1] for k, v in parse_qs(parts.query).items()},
            headers={k.lower(): v for k, v in request.headers.raw_items()},
        )
        self.sessions.append(session)
        self.connected.set()
        return session

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        session = self.open_session(ws.request)
        try:
            await _Stream(self, ws, session).run()
        except ConnectionClosed:
            pass
        finally:
            session.close_code = ws.close_code
            session.closed.set()


class _Stream:
    """One connection's transcription state."""

    def __init__(self, fake: FakeDeepgram, ws: ServerConnection, session: DeepgramSession) -> None:
        self.fake, self.ws, self.session = fake, ws, session
        self.request_id = str(uuid.uuid4())
        self.script = itertools.cycle(fake.transcripts) if fake.cycle and fake.transcripts else (
            iter(fake.transcripts))
        self.endpointing_frames = fake.endpointing_frames
        requested = session.query.get("endpointing", "")
        if fake.endpointing_from_request and requested.isdigit():
            self.endpointing_frames = max(1, int(requested) // 20)
        self.pending_frames = 0  # frames since the utterance began (speech and pauses)
        self.later: set[asyncio.Task[None]] = set()
        self.audio_s = 0.0
        self.in_speech = False
        self.pending = False  # speech heard since the last final
        self.speech_start_s = 0.0
        self.speech_frames = 0
        self.silent_frames = 0
        self.pending_frames = 0  # frames since the utterance began (speech and pauses)
        self.current = ""
        self._waiting_since: float | None = None  # loop time recv() began waiting
        self._idle_close: asyncio.Future[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Messages until the stream ends. The idle watchdog is one timer re-armed lazily,
        not a timeout per message: at load a message arrives every 40 ms per socket."""
        loop = asyncio.get_running_loop()
        self.start_watchdog(loop)
        try:
            await self._run(loop)
        except ConnectionClosed:
            if self._idle_close is None:
                raise
        finally:
            self.stop_watchdog()
        if self._idle_close is not None:
            await self._idle_close

    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        self._waiting_since = loop.time()
        self._watchdog = loop.call_at(loop.time() + self.fake.idle_timeout_s, self._idle_check)

    def stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _idle_check(self) -> None:
        """``idle_timeout_s`` without data while waiting for it: close 1011 NET-0001."""
        loop = asyncio.get_running_loop()
        since = self._waiting_since
        due = (loop.time() if since is None else since) + self.fake.idle_timeout_s
        if since is None or loop.time() < due:
            self._watchdog = loop.call_at(due, self._idle_check)
            return
        self._idle_close = asyncio.ensure_future(self.ws.close(1011, "NET-0001"))

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            self._waiting_since = loop.time()
            message = await self.ws.recv()
            self._waiting_since = None
            if await self.message(message):
                return

    async def message(self, message: str | bytes) -> bool:
        """One message from the client; True once the stream is over."""
        if isinstance(message, bytes):
            if not message:  # the legacy "close stream" signal
                await self._close_stream()
                return True
            self.session.audio_messages += 1
            self.session.messages.append(len(message))
            # Deepgram times audio, not messages: a 40 ms message is two 20 ms frames.
            for at in range(0, len(message), _FRAME_BYTES):
                if await self._audio(message[at : at + _FRAME_BYTES]):
                    return True
                self.session.frames_handled += 1
            return False
        return await self._control(message)

    async def _audio(self, frame: bytes) -> bool:
        fake, session = self.fake, self.session
        session.audio.extend(frame)
        session.frames += 1
        self.audio_s += len(frame) / 8000
        if fake.close_after_frames is not None and session.frames >= fake.close_after_frames:
            await self.ws.close(fake.close_code, fake.close_reason)
            return True
        if session.frames == fake.malformed_after_frames:
            await self.ws.send('{"type": "Results", "channel": ')
        if _speech(frame, fake.silence_level):
            await self._speech_frame()
        elif self.in_speech:
            self.silent_frames += 1
            endpointing = self.endpointing_frames
            if endpointing is not None and self.silent_frames >= endpointing:
                await self._final(from_finalize=False)
        if self.pending and fake.interim_every_frames:
            self.pending_frames += 1
            if self.pending_frames % fake.interim_every_frames == 0 and self.current:
                await self._results(self._heard_so_far(), is_final=False)
        return False

    def _heard_so_far(self) -> str:
        """Interim words: as many as were spoken by now; all of them once a pause began;
        none before the live model recognised its first word."""
        words = self.current.split()
        if self.silent_frames > 0:
            return self.current
        spoken_s = self.speech_frames * 0.02
        if spoken_s < self.fake.first_word_s:
            return ""
        return " ".join(words[: max(1, min(len(words), int(spoken_s * self.fake.words_per_s)))])

    async def _speech_frame(self) -> None:
        if not self.in_speech:
            self.in_speech = True
            self.silent_frames = 0
            if not self.pending:
                self.pending = True
                self.speech_frames = 0
                self.pending_frames = 0
                self.speech_start_s = self.audio_s - 0.02
                self.current = next(self.script, "")
                await self._send({"type": "SpeechStarted", "channel": [0],
                                  "timestamp": round(self.speech_start_s, 3)})
        self.silent_frames = 0
        self.speech_frames += 1
        if self.fake.interim_every_frames:
            return  # interims come on their own beat (see _audio)
        if self.speech_frames == self.fake.interim_after_frames and self.current:
            words = self.current.split()
            await self._results(" ".join(words[: max(1, len(words) // 2)]), is_final=False)

    async def _control(self, text: str) -> bool:
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            kind = None
        self.session.controls.append(str(kind))
        self.session.messages.append(str(kind))
        if kind == "Finalize":
            if self.fake.final_latency_s:
                await self._final(from_finalize=True)
            elif self.fake.final_delay_s:
                await asyncio.sleep(self.fake.final_delay_s)
            await self._final(from_finalize=True)
        elif kind == "CloseStream":
            await self._close_stream()
            return True
        return False  # KeepAlive and unknown messages only reset the idle timer

    async def _final(self, *, from_finalize: bool) -> None:
        text = self.current if self.pending else ""
        pending = self.pending
        self.pending = self.in_speech = False
        self.current = ""
        self.session.finals_sent += 1
        if self.fake.final_latency_s:
            # The vendor's answer takes a while; the socket keeps taking audio meanwhile.
            message = self._results_message(text, is_final=True, speech_final=not from_finalize,
                                            from_finalize=from_finalize)
            task = asyncio.create_task(self._send_later(message, pending))
            self.later.add(task)
            task.add_done_callback(self.later.discard)
            return
        await self._results(text, is_final=True, speech_final=not from_finalize,
                            from_finalize=from_finalize)
        if pending:
            await self._send({"type": "UtteranceEnd", "channel": [0, 1],
                              "last_word_end": round(self.audio_s, 3)})

    async def _send_later(self, message: dict[str, Any], utterance_end: bool) -> None:
        await asyncio.sleep(self.fake.final_latency_s)
        try:
            await self._send(message)
            if utterance_end:
                await self._send({"type": "UtteranceEnd", "channel": [0, 1],
                                  "last_word_end": round(self.audio_s, 3)})
        except ConnectionClosed:
            pass

    async def _close_stream(self) -> None:
        if self.pending:
            await self._final(from_finalize=True)
        await self._send({
            "type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
            "sha256": "0" * 64, "created": "2024-01-01T00:00:00.000Z",
            "duration": round(self.audio_s, 3), "channels": 1,
        })
        await self.ws.close(1000)

    async def _results(
        self, text: str, *, is_final: bool, speech_final: bool = False, from_finalize: bool = False
    ) -> None:
        await self._send(self._results_message(text, is_final=is_final,
                                               speech_final=speech_final,
                                               from_finalize=from_finalize))

    def _results_message(
        self, text: str, *, is_final: bool, speech_final: bool = False, from_finalize: bool = False
    ) -> dict[str, Any]:
        start = self.speech_start_s if text else self.audio_s
        duration = max(0.0, self.audio_s - start)
        words = text.split()
        step = duration / len(words) if words else 0.0
        return {
            "type": "Results", "channel_index": [0, 1], "duration": round(duration, 3),
            "start": round(start, 3), "is_final": is_final, "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{
                "transcript": text, "confidence": 0.98 if text else 0.0,
                "words": [
                    {"word": w.strip(".,!?").lower(), "start": round(start + i * step, 3),
                     "end": round(start + (i + 1) * step, 3), "confidence": 0.98,
                     "punctuated_word": w}
                    for i, w in enumerate(words)
                ],
            }]},
            "metadata": {"request_id": self.request_id, "model_uuid": str(uuid.uuid4()),
                         "model_info": {"name": "2-general-nova", "version": "fake",
                                        "arch": "nova-2"}},
        }

    async def _send(self, message: dict[str, Any]) -> None:
        self.session.sent.append(message)
        await self.ws.send(json.dumps(message))
