"""A fake OpenAI-compatible speech server: ``POST /v1/audio/speech`` and
``POST /v1/audio/transcriptions``.

Follows platform.openai.com's API reference "Create speech" (JSON ``model``, ``input``,
``voice``, ``response_format``, ``speed``; ``pcm`` is raw 16-bit little-endian mono at
24 kHz, sent chunked as it is made) and "Create transcription" (multipart/form-data with
``file`` and ``model``, optional ``language``/``prompt``/``response_format``; answers
``{"text": …}`` for ``json``, the bare text for ``text``). Errors use OpenAI's
``{"error": {"message", "type", "param", "code"}}``. Self-hosted servers (speaches,
faster-whisper-server, Kokoro-FastAPI) speak the same shapes.

Speech is a 440 Hz tone, ``ms_per_char`` per character, sent in odd-sized chunks so that
samples straddle reads. Transcription answers ``transcripts`` in order, one per request;
``transcription_failures`` answer the next requests with errors first, and
``drop_transcriptions`` cuts the next requests' connections after the status line, as a
dying proxy or a crashed worker does.
Not modelled: mp3/opus/aac/flac/wav output (400 here), ``instructions``, streaming
transcription events, verbose_json/srt/vtt, timestamps, audio formats other than WAV.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import io
import json
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from callbridge.audio import levels
from fakes._http import HttpFake
from fakes.script import Failure


@dataclass
class Upload:
    """One transcription request as received."""

    fields: dict[str, str]
    filename: str
    content_type: str
    pcm16: bytes
    rate_hz: int


class FakeOpenAIAudio(HttpFake):
    path_prefix = "/v1"

    def __init__(
        self,
        transcripts: Sequence[str] = (),
        *,
        api_key: str | None = "test-speech-key",
        rate_hz: int = 24000,
        ms_per_char: int = 50,
        chunk_bytes: int = 4801,
        first_audio_delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        transcribe_delay_s: float = 0.0,
        speech_failures: Sequence[Failure] = (),
        transcription_failures: Sequence[Failure] = (),
        drop_speech_after_chunks: int | None = None,
        drop_transcriptions: int = 0,
    ) -> None:
        super().__init__()
        self.transcripts = list(transcripts)
        self.api_key = api_key
        self.rate_hz = rate_hz
        self.ms_per_char = ms_per_char
        self.chunk_bytes = chunk_bytes
        self.first_audio_delay_s = first_audio_delay_s
        self.chunk_delay_s = chunk_delay_s
        self.transcribe_delay_s = transcribe_delay_s
        self.speech_failures = list(speech_failures)
        self.transcription_failures = list(transcription_failures)
        self.drop_speech_after_chunks = drop_speech_after_chunks
        self.drop_transcriptions = drop_transcriptions
        self.speech_requests: list[dict[str, Any]] = []
        self.uploads: list[Upload] = []
        self.headers: list[dict[str, str]] = []
        self.speech_aborted = 0

    def app(self) -> ASGIApp:
        return Starlette(routes=[
            Route("/v1/audio/speech", self._speech, methods=["POST"]),
            Route("/v1/audio/transcriptions", self._transcription, methods=["POST"]),
        ])

    def pcm_for(self, text: str) -> bytes:
        """The exact PCM16 this fake speaks for ``text`` at ``rate_hz``."""
        return levels.tone(440.0, max(20, len(text) * self.ms_per_char), -20.0, self.rate_hz)

    def _refused(self, request: Request) -> Response | None:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if self.api_key is not None and (
            request.headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        return None

    async def _failure(self, failures: list[Failure]) -> Response | None:
        if not failures:
            return None
        failure = failures.pop(0)
        if failure.hang:
            await self.release.wait()
        return _error(failure.status, failure.message, failure.code)

    async def _speech(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused:
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        self.speech_requests.append(body)
        for name in ("model", "input", "voice"):
            if not isinstance(body.get(name), str) or not body[name]:
                return _error(400, f"'{name}' is a required property")
        if len(body["input"]) > 4096:
            return _error(400, "'input' is longer than 4096 characters")
        if body.get("response_format", "mp3") != "pcm":
            return _error(400, "this fake speaks response_format=pcm only")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            return _error(400, "'speed' must be between 0.25 and 4.0")
        failed = await self._failure(self.speech_failures)
        if failed:
            return failed
        return StreamingResponse(self._pcm(body["input"]), media_type="audio/pcm")

    async def _pcm(self, text: str) -> AsyncIterator[bytes]:
        finished = False
        try:
            if self.first_audio_delay_s:
                await asyncio.sleep(self.first_audio_delay_s)
            pcm = self.pcm_for(text)
            for index, start in enumerate(range(0, len(pcm), self.chunk_bytes)):
                if index == self.drop_speech_after_chunks:
                    raise ConnectionAbortedError("connection cut mid-body (scripted)")
                yield pcm[start : start + self.chunk_bytes]
                await asyncio.sleep(self.chunk_delay_s)
            finished = True
        finally:
            if not finished:
                self.speech_aborted += 1

    async def _transcription(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused:
            return refused
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return _error(400, "expected multipart/form-data")
        fields, files = _multipart(content_type, await request.body())
        if "file" not in files:
            return _error(400, "'file' is a required property")
        if not fields.get("model"):
            return _error(400, "'model' is a required property")
        filename, file_type, payload = files["file"]
        try:
            with wave.open(io.BytesIO(payload), "rb") as wav:
                pcm, rate = wav.readframes(wav.getnframes()), wav.getframerate()
                if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                    return _error(400, "this fake reads 16-bit mono WAV only")
        except (wave.Error, EOFError):
            return _error(400, "Invalid file format. Supported formats: flac, m4a, mp3, "
                          "mp4, mpeg, mpga, oga, ogg, wav, webm")
        self.uploads.append(Upload(fields, filename, file_type, pcm, rate))
        if self.drop_transcriptions > 0:
            self.drop_transcriptions -= 1
            return StreamingResponse(_cut(), media_type="application/json")
        failed = await self._failure(self.transcription_failures)
        if failed:
            return failed
        if self.transcribe_delay_s:
            await asyncio.sleep(self.transcribe_delay_s)
        text = self.transcripts.pop(0) if self.transcripts else ""
        if fields.get("response_format") == "text":
            return PlainTextResponse(text + "\n")
        return JSONResponse({"text": text})


async def _cut() -> AsyncIterator[bytes]:
    yield b'{"te'
    raise ConnectionAbortedError("connection cut mid-answer (scripted)")


def _multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    """Parse multipart/form-data with the standard library's MIME parser."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[str(name)] = (filename, part.get_content_type(), payload)
        else:
            fields[str(name)] = payload.decode()
    return fields, files


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status_code=status,
    )
