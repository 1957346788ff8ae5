"""A fake VAPI: ``POST /call`` and the call's WebSocket transport, on 127.0.0.1.

Follows docs.vapi.ai/calls/websocket-transport and the API reference: ``POST /call`` with
``Authorization: Bearer <key>`` and ``transport: {provider: "vapi.websocket",
audioFormat: {format, container, sampleRate}}`` plus ``assistantId`` or ``assistant``
answers 201 with the call (``type: "vapi.websocketCall"``, ``status: "queued"``,
``transport.websocketCallUrl``); errors use the API's NestJS shape (``{"message",
"error", "statusCode"}``). On the socket, binary frames are raw μ-law both ways and text
frames are JSON: ``{"type": "hangup"}`` from the client ends the call; the fake sends
``speech-update``, ``user-interrupted``, ``conversation-update``, ``status-update`` and
``end-of-call-report`` messages, bare, as VAPI's client messages are.

It cannot understand speech: it greets with a tone, hears "speech" by energy, and
answers each utterance by playing the caller's own audio back (echo) in ``chunk_ms``
pieces (not 20 ms frames, as VAPI's are not), up to ``send_ahead_ms`` ahead of real time
(TTS audio is sent as it is made). Caller speech while it talks stops its audio and sends
``speech-update`` (user started) and ``user-interrupted``, then ``stale_ms`` more of the
cut speech: audio that was already in flight, which the client must not play.
Failures on demand: ``fail_create`` (HTTP statuses for the next POSTs), ``reject_socket``
(HTTP status for the upgrade), ``drop_after_frames`` (close 1011 mid-call).
Not modelled: transcripts, tools, PCM formats, phone-number fields, ``listenUrl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from callbridge.audio import levels, ulaw
from fakes._http import HttpFake

GREETING_TONE = ulaw.encode(levels.tone(440, 1000, -12))
_MULAW = {"format": "mulaw", "container": "raw", "sampleRate": 8000}


@dataclass
class FakeVapiCall:
    """One created call and what its socket carried, for assertions."""

    id: str
    body: dict[str, Any]
    caller_audio: bytearray = field(default_factory=bytearray)
    caller_frames: int = 0
    controls: list[dict[str, Any]] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # types of the JSON messages we sent
    bot_bytes_sent: int = 0
    interruptions: int = 0
    utterances: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    end_requested: asyncio.Event = field(default_factory=asyncio.Event)
    ended_reason: str | None = None


class FakeVapi(HttpFake):
    ws = "auto"

    def __init__(
        self,
        *,
        api_key: str = "test-vapi-key",
        greeting_ms: int = 1000,
        chunk_ms: int = 60,
        send_ahead_ms: int = 500,
        stale_ms: int = 120,
        speech_dbfs: float = -40.0,
        speech_start_frames: int = 3,
        speech_end_frames: int = 15,
        fail_create: list[int] | None = None,
        reject_socket: int | None = None,
        drop_after_frames: int | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.greeting_ms = greeting_ms
        self.chunk_ms = chunk_ms
        self.send_ahead_ms = send_ahead_ms
        self.stale_ms = stale_ms
        self.speech_dbfs = speech_dbfs
        self.speech_start_frames = speech_start_frames
        self.speech_end_frames = speech_end_frames
        self.fail_create = list(fail_create or [])
        self.reject_socket = reject_socket
        self.drop_after_frames = drop_after_frames
        self.calls: list[FakeVapiCall] = []
        self.create_requests = 0
        self.refused: list[int] = []

    def end_call(self, index: int = -1) -> None:
        """Make the assistant end the call (as its endCall tool would): goodbye, ended."""
        self.calls[index].end_requested.set()

    # ---------------------------------------------------------------- server life

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/call", self._create, methods=["POST"]),
                WebSocketRoute("/{call_id}/transport", self._transport),
            ]
        )

    # ---------------------------------------------------------------- REST

    async def _create(self, request: Request) -> Response:
        self.create_requests += 1
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Invalid Key. Hot tip, you may be using the private key "
                               "instead of the public key, or vice versa.", "Unauthorized")
        if self.fail_create:
            status = self.fail_create.pop(0)
            return self._error(status, "injected failure", "Internal Server Error")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._error(400, "Unexpected token in JSON", "Bad Request")
        problems = _problems(body)
        if problems:
            return self._error(400, problems, "Bad Request")
        call = FakeVapiCall(id=str(uuid.uuid4()), body=body)
        self.calls.append(call)
        return JSONResponse(
            {
                "id": call.id,
                "orgId": "eb166faa-7145-46ef-8044-589b47ae3b56",
                "type": "vapi.websocketCall",
                "status": "queued",
                "cost": 0,
                "createdAt": "2025-06-10T12:00:00.000Z",
                "updatedAt": "2025-06-10T12:00:00.000Z",
                **({"assistantId": body["assistantId"]} if "assistantId" in body else {}),
                "transport": {
                    "provider": "vapi.websocket",
                    "websocketCallUrl": f"ws://127.0.0.1:{self._port}/{call.id}/transport",
                },
            },
            status_code=201,
        )

    def _error(self, status: int, message: str | list[str], error: str) -> Response:
        self.refused.append(status)
        return JSONResponse(
            {"message": message, "error": error, "statusCode": status}, status_code=status
        )

    # ---------------------------------------------------------------- the socket

    async def _transport(self, websocket: WebSocket) -> None:
        call = next((c for c in self.calls if c.id == websocket.path_params["call_id"]), None)
        if call is None or self.reject_socket is not None:
            status = 404 if call is None else self.reject_socket
            assert status is not None
            self.refused.append(status)
            await websocket.send_denial_response(
                JSONResponse({"message": "call not found", "statusCode": status}, status)
            )
            return
        await websocket.accept()
        call.connected.set()
        await _Conversation(self, call, websocket).run()


class _Conversation:
    """The fake assistant on one socket: greet, listen by energy, echo, be interrupted."""

    def __init__(self, fake: FakeVapi, call: FakeVapiCall, ws: WebSocket) -> None:
        self.fake, self.call, self.ws = fake, call, ws
        self.speaking: asyncio.Task[None] | None = None
        self.playing = b""
        self.played = 0  # bytes of ``playing`` sent so far
        self.loud_run = 0
        self.quiet_run = 0
        self.in_speech = False
        self.utterance = bytearray()
        self.lock = asyncio.Lock()

    async def run(self) -> None:
        ender = asyncio.create_task(self._end_when_asked())
        try:
            self._speak(GREETING_TONE * (self.fake.greeting_ms // 1000 + 1),
                        self.fake.greeting_ms)
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    if await self._caller_frame(message["bytes"]):
                        return
                elif message.get("text") is not None and await self._control(message["text"]):
                    return
        except WebSocketDisconnect:
            return
        finally:
            ender.cancel()
            await self._stop_speaking()
            if self.ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                    await self.ws.close(code=1000)
            self.call.closed.set()

    async def _caller_frame(self, data: bytes) -> bool:
        """Book one frame; True when the fake dropped the socket."""
        call = self.call
        call.caller_audio += data
        call.caller_frames += 1
        if self.fake.drop_after_frames is not None and call.caller_frames >= (
            self.fake.drop_after_frames
        ):
            await self.ws.close(code=1011, reason="injected drop")
            return True
        loud = levels.rms_dbfs(ulaw.decode(data)) > self.fake.speech_dbfs
        self.loud_run = self.loud_run + 1 if loud else 0
        self.quiet_run = 0 if loud else self.quiet_run + 1
        if self.in_speech:
            self.utterance += data
            if self.quiet_run >= self.fake.speech_end_frames:
                self.in_speech = False
                call.utterances += 1
                await self._send({"type": "speech-update", "role": "user", "status": "stopped",
                                  "turn": call.utterances})
                echo = bytes(self.utterance)
                self._speak(echo, len(echo) // 8)
        elif self.loud_run >= self.fake.speech_start_frames:
            self.in_speech = True
            self.utterance = bytearray(data)
            await self._send({"type": "speech-update", "role": "user", "status": "started",
                              "turn": call.utterances})
            if self.speaking is not None and not self.speaking.done():
                in_flight = self.playing[self.played : self.played + self.fake.stale_ms * 8]
                await self._stop_speaking()
                call.interruptions += 1
                await self._send({"type": "user-interrupted"})
                if in_flight:
                    await self._send_bytes(in_flight)
        return False

    async def _control(self, text: str) -> bool:
        """A client control message; True when it ended the call."""
        message = json.loads(text)
        self.call.controls.append(message)
        if message.get("type") in ("hangup", "end-call"):
            await self._stop_speaking()
            await self._finish("customer-ended-call")
            return True
        return False

    async def _end_when_asked(self) -> None:
        await self.call.end_requested.wait()
        await self._stop_speaking()
        goodbye = ulaw.encode(levels.tone(330, 600, -12))
        self._speak(goodbye, 600)
        assert self.speaking is not None
        await asyncio.wait({self.speaking})
        await self._finish("assistant-ended-call")
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self.ws.close(code=1000)

    async def _finish(self, reason: str) -> None:
        self.call.ended_reason = reason
        await self._send({"type": "status-update", "status": "ended", "endedReason": reason})
        await self._send({"type": "end-of-call-report", "endedReason": reason,
                          "summary": "", "messages": []})

    def _speak(self, audio: bytes, ms: int) -> None:
        self.playing, self.played = audio[: ms * 8], 0
        self.speaking = asyncio.create_task(self._play(self.playing))

    async def _stop_speaking(self) -> None:
        task, self.speaking = self.speaking, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def _play(self, audio: bytes) -> None:
        """Stream ``audio`` a little ahead of real time, between speech-updates."""
        chunk = self.fake.chunk_ms * 8
        ahead_s = self.fake.send_ahead_ms / 1000
        loop = asyncio.get_running_loop()
        await self._send({"type": "speech-update", "role": "assistant", "status": "started",
                          "turn": self.call.utterances})
        start = loop.time()
        for offset in range(0, len(audio), chunk):
            await self._send_bytes(audio[offset : offset + chunk])
            self.played = offset + chunk
            due = start + (offset + chunk) / 8000 - ahead_s
            await asyncio.sleep(max(0.0, due - loop.time()))
        await self._send({"type": "speech-update", "role": "assistant", "status": "stopped",
                          "turn": self.call.utterances})
        await self._send({"type": "conversation-update", "messages": []})

    async def _send(self, message: dict[str, Any]) -> None:
        async with self.lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.send_text(json.dumps(message))
                self.call.sent.append(str(message["type"]))

    async def _send_bytes(self, data: bytes) -> None:
        async with self.lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.send_bytes(data)
                self.call.bot_bytes_sent += len(data)


def _problems(body: Any) -> list[str]:
    """The API's validation, for the fields this client sends."""
    if not isinstance(body, dict):
        return ["body must be an object"]
    problems = []
    if ("assistantId" in body) == ("assistant" in body):
        problems.append("exactly one of assistantId or assistant must be given")
    if "phoneNumber" in body or "phoneNumberId" in body:
        problems.append("phoneNumber is not allowed with the vapi.websocket transport")
    transport = body.get("transport")
    if not isinstance(transport, dict) or transport.get("provider") != "vapi.websocket":
        problems.append("transport.provider must be vapi.websocket")
    elif transport.get("audioFormat") != _MULAW:
        problems.append(f"this fake speaks only {_MULAW}, got {transport.get('audioFormat')}")
    extra = set(body) - {"assistantId", "assistant", "transport", "assistantOverrides",
                         "name", "metadata"}
    problems.extend(f"property {name} should not exist" for name in sorted(extra))
    return problems
