"""A fake ElevenLabs text-to-speech ``stream-input`` WebSocket server.

Follows elevenlabs.io/docs, API reference "WebSocket" (``GET
/v1/text-to-speech/{voice_id}/stream-input``; query ``model_id``, ``output_format``,
``auto_mode``, ``inactivity_timeout``, ``language_code``; header ``xi-api-key``): the first
message ``{"text": " ", "voice_settings": …}``, text messages (``flush: true`` generates
what is buffered), ``{"text": ""}`` ends the input; answers
``{"audio": base64, "isFinal": null, "normalizedAlignment": …, "alignment": …}`` and finally
``{"isFinal": true}``, then a normal close. Errors as seen from the vendor: a JSON
``{"message", "error", "code": 1008}`` then close 1008 (e.g. ``voice_settings`` changed
after the first message, 20 s without input), HTTP ``{"detail": {"status", "message"}}``
on a refused upgrade.

Audio is a μ-law 440 Hz tone, ``ms_per_char`` long per character, in ``chunk_ms`` pieces.
``multi-stream-input`` (many contexts on one socket) is served by ``elevenlabs_multi``.
``first_audio_delay_s`` is the wait before each generation's first audio;
``new_connection_s`` is what opening a socket costs (paid before the upgrade answer);
``connections``
counts the sockets opened. ``lean_socket`` serves the same protocol on ``_lean_ws``
(``_lean_conn``) instead of websockets' asyncio server: a fraction of the CPU a message,
for the load benchmark's client core.
Not modelled: real speech, the chunk_length_schedule buffer (text is generated on flush
or at the end), SSML, pronunciation dictionaries, ``sync_alignment``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from callbridge.audio import levels, ulaw
from fakes._ws import port_of, refuse
from fakes.elevenlabs_multi import audio_message, serve_multi

_PATH = re.compile(r"^/v1/text-to-speech/([^/]+)/(stream-input|multi-stream-input)$")
_FORMATS = {"mp3_44100", "mp3_44100_128", "mp3_22050_32", "pcm_16000", "pcm_22050",
            "pcm_24000", "pcm_44100", "ulaw_8000", "alaw_8000", "opus_48000_64"}
_SPOKEN_CACHE = 256  # distinct texts whose audio messages are kept
_VOICE_SETTINGS_ERROR = ("voice_settings field must be provided in the first message and "
                         "then either be not provided or not change.")


@dataclass
class ElevenLabsSession:
    voice_id: str
    query: dict[str, str]
    headers: dict[str, str]
    messages: list[dict[str, Any]] = field(default_factory=list)
    multi: bool = False
    chunks_sent: int = 0
    final_sent: bool = False
    contexts_opened: list[str] = field(default_factory=list)
    contexts_closed: list[str] = field(default_factory=list)
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        return "".join(str(m.get("text", "")) for m in self.messages[1:])


class FakeElevenLabs:
    lean_by_default = False  # what ``lean_socket=None`` means (a test may flip it)

    def __init__(
        self,
        *,
        api_key: str = "test-elevenlabs-key",
        ms_per_char: int = 50,
        chunk_ms: int = 100,
        first_audio_delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        inactivity_timeout_s: float = 20.0,
        fail_upgrade: int | None = None,
        close_after_chunks: int | None = None,
        close_code: int = 1011,
        error_after_chunks: int | None = None,
        error: tuple[str, str] = ("We are sorry, something went wrong.", "internal_error"),
        malformed_after_chunks: int | None = None,
        hang: bool = False,
        new_connection_s: float = 0.0,
        lean_socket: bool | None = None,
    ) -> None:
        self.api_key = api_key
        self.lean_socket = self.lean_by_default if lean_socket is None else lean_socket
        self.new_connection_s = new_connection_s
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms
        self.first_audio_delay_s = first_audio_delay_s
        self.chunk_delay_s = chunk_delay_s
        self.inactivity_timeout_s = inactivity_timeout_s
        self.fail_upgrade = fail_upgrade
        self.close_after_chunks = close_after_chunks
        self.close_code = close_code
        self.error_after_chunks = error_after_chunks
        self.error = error
        self.malformed_after_chunks = malformed_after_chunks
        self.hang = hang
        self.sessions: list[ElevenLabsSession] = []
        self.refused: list[int] = []
        self._server: Server | None = None
        self._release = asyncio.Event()
        self._spoken: dict[str, list[str]] = {}  # text → audio messages minus their tail

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use 'async with FakeElevenLabs(...)'"
        return f"http://127.0.0.1:{port_of(self._server)}"

    @property
    def connections(self) -> int:
        """Sockets opened (upgraded) so far."""
        return len(self.sessions)

    def audio_for(self, text: str) -> bytes:
        """The exact μ-law bytes this fake speaks for ``text`` (for assertions)."""
        ms = max(self.chunk_ms, len(text) * self.ms_per_char)
        return ulaw.encode(levels.tone(440.0, ms, -20.0))

    async def __aenter__(self) -> FakeElevenLabs:
        if self.lean_socket:
            from fakes._lean_conn import serve_handler

            async def upgrade(request: Request) -> Response | None:
                return await self._upgrade(None, request)  # type: ignore[arg-type]

            self._server = await serve_handler(upgrade, self._handle)  # type: ignore[arg-type]
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
        self._release.set()
        self._server.close()
        await self._server.wait_closed()

    async def _upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        """A socket is one connection: its set-up cost is paid before the upgrade answer
        (TCP + TLS happen before the request in real life; the client waits the same)."""
        if self.new_connection_s > 0:
            await asyncio.sleep(self.new_connection_s)
        return self._check_upgrade(connection, request)

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        status, message = None, ""
        if self.fail_upgrade is not None:
            status, message = self.fail_upgrade, "injected failure"
        elif not _PATH.match(parts.path):
            status, message = 404, f"no route {parts.path}"
        elif request.headers.get("xi-api-key") != self.api_key:
            status, message = 401, "Invalid API key"
        elif query.get("output_format", "mp3_44100") not in _FORMATS:
            status, message = 400, f"invalid output_format {query['output_format']!r}"
        if status is None:
            return None
        self.refused.append(status)
        kind = {401: "invalid_api_key", 400: "invalid_request"}.get(status, "internal_error")
        return refuse(status, {"detail": {"status": kind, "message": message}})

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        match = _PATH.match(parts.path)
        assert match is not None
        session = ElevenLabsSession(
            voice_id=match.group(1),
            query={k: v[-1] for k, v in parse_qs(parts.query).items()},
            headers={k.lower(): v for k, v in ws.request.headers.raw_items()},
            multi=match.group(2) == "multi-stream-input",
        )
        self.sessions.append(session)
        try:
            if session.multi:
                await serve_multi(self, ws, session)
            else:
                await self._serve(ws, session)
        except ConnectionClosed:
            pass
        finally:
            session.close_code = ws.close_code
            session.closed.set()

    async def _serve(self, ws: ServerConnection, session: ElevenLabsSession) -> None:
        buffered = ""
        first_settings: Any = None
        while True:
            try:
                async with asyncio.timeout(self.inactivity_timeout_s):
                    raw = await ws.recv()
            except TimeoutError:
                await self._fail(ws, "Have not received a new text input within the timeout "
                                 f"of {self.inactivity_timeout_s:g} seconds.", "input_timeout")
                return
            try:
                message = json.loads(raw)
                text = message["text"]
            except (ValueError, KeyError, TypeError):
                await self._fail(ws, "Could not parse input message, make sure it is a json "
                                 "and follows the schema outlined in protocol.",
                                 "invalid_input_message")
                return
            session.messages.append(message)
            if len(session.messages) == 1:
                first_settings = message.get("voice_settings")
                continue
            if "voice_settings" in message and message["voice_settings"] != first_settings:
                await self._fail(ws, _VOICE_SETTINGS_ERROR, "invalid_input_message")
                return
            if text == "":
                if not await self._speak(ws, session, buffered):
                    return
                await ws.send(json.dumps({"isFinal": True}))
                session.final_sent = True
                await ws.close(1000)
                return
            buffered += text
            if message.get("flush") and buffered.strip():
                if not await self._speak(ws, session, buffered):
                    return
                buffered = ""

    async def _speak(self, ws: ServerConnection, session: ElevenLabsSession, text: str) -> bool:
        return await self.speak_into(ws, session, text, None)

    async def speak_into(
        self, ws: ServerConnection, session: ElevenLabsSession, text: str, context_id: str | None
    ) -> bool:
        """Send the audio for ``text`` (of ``context_id`` on a multi-context socket); False
        when a scripted failure ended the socket."""
        if not text.strip():
            return True
        if self.hang:
            await self._release.wait()
            return False
        if self.first_audio_delay_s:
            await asyncio.sleep(self.first_audio_delay_s)
        for index, message in enumerate(self._messages(text, context_id)):
            sent = session.chunks_sent
            if sent == self.close_after_chunks:
                await ws.close(self.close_code, "internal error")
                return False
            if sent == self.error_after_chunks:
                await self._fail(ws, *self.error)
                return False
            if sent == self.malformed_after_chunks:
                await ws.send("{'audio': not json")
            if self.chunk_delay_s and index:
                await asyncio.sleep(self.chunk_delay_s)
            await ws.send(message)
            session.chunks_sent += 1
        return True

    def _messages(self, text: str, context_id: str | None) -> list[str]:
        """The audio messages for ``text``, exactly as ``audio_message`` writes them. The
        tone, base64 and JSON of a text are made once (a load run speaks the same reply
        thousands of times); only the context id is spliced in per socket."""
        bodies = self._spoken.get(text)
        if bodies is None:
            if len(self._spoken) >= _SPOKEN_CACHE:
                self._spoken.clear()
            bodies = self._spoken[text] = self._bodies(text)
        tail = ', "isFinal": null}' if context_id is None else (
            f', "contextId": {json.dumps(context_id)}}}')
        return [body + tail for body in bodies]

    def _bodies(self, text: str) -> list[str]:
        """``audio_message`` without its closing brace and its last key, per piece."""
        audio = self.audio_for(text.strip())
        size = self.chunk_ms * 8
        pieces = [audio[i : i + size] for i in range(0, len(audio), size)]
        chars = list(text)
        per_piece = max(1, -(-len(chars) // len(pieces)))
        bodies = []
        for index, piece in enumerate(pieces):
            span = chars[index * per_piece : (index + 1) * per_piece]
            start = index * self.chunk_ms
            alignment = {
                "chars": span,
                "charStartTimesMs": [start + i * self.ms_per_char for i in range(len(span))],
                "charDurationsMs": [self.ms_per_char] * len(span),
            }
            message = audio_message(base64.b64encode(piece).decode(), alignment, "")
            bodies.append(message[: message.rindex(', "contextId": ')])
        return bodies

    async def _fail(self, ws: ServerConnection, message: str, error: str) -> None:
        await ws.send(json.dumps({"message": message, "error": error, "code": 1008}))
        await ws.close(1008, message[:120])
