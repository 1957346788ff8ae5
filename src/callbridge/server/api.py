"""``/api``: the call record and call control over HTTP, behind a bearer token.

Reads come from the store; control goes through Twilio REST, so any instance can hang
up, transfer or place any call (DESIGN.md §10). Without ``CALLBRIDGE_API_TOKEN`` the API
is off (503), never open. ``/metrics`` (Prometheus) is outside the token, like
``/healthz``: scrapers on the private network read it.
"""

from __future__ import annotations

import hmac
import logging
import re
import struct
import wave
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from callbridge.server.control import CallControl
from callbridge.server.edge import Edge
from callbridge.store import Store
from callbridge.store.models import Call, Event, Recording, Turn, utc
from callbridge.store.ops import CallSeen, EventHappened
from callbridge.store.repository import CallFilter, get_call, list_calls
from callbridge.telemetry.logging import log_event
from callbridge.telemetry.metrics import CONTENT_TYPE, Metrics
from callbridge.twilio import twiml
from callbridge.twilio.rest import TwilioRest, TwilioRestError

__all__ = [
    "E164",
    "ControlOut",
    "TransferIn",
    "hangup_call",
    "metrics_router",
    "recording_response",
    "router",
    "transfer_call",
]

log = logging.getLogger(__name__)

E164 = r"^\+[1-9][0-9]{1,14}$"
_WAV_HEADER_BYTES = 44  # IncrementalWavWriter's canonical RIFF header
_CALL_SID = r"^CA[0-9a-fA-F]{32}$"

_bearer = HTTPBearer(auto_error=False, description="CALLBRIDGE_API_TOKEN")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 without a bearer token, 403 with a wrong one, 503 when no token is configured."""
    edge: Edge = request.app.state.edge
    expected = edge.settings.api_token
    if expected is None:
        raise HTTPException(503, "the API is off: set CALLBRIDGE_API_TOKEN to enable it")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            401, "expected 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(
        credentials.credentials.encode(), expected.get_secret_value().encode()
    ):
        log_event(log, logging.WARNING, "api.bad_token", path=request.url.path)
        raise HTTPException(403, "wrong API token")


router = APIRouter(prefix="/api", tags=["calls"], dependencies=[Depends(require_token)])
metrics_router = APIRouter()


# ------------------------------------------------------------------ shapes


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CallOut(_Out):
    sid: str
    from_: str = Field(alias="from")
    to: str
    direction: str
    status: str
    assistant: str
    outcome: str | None
    instance: str | None = None
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    turns: int | None = None


class TurnOut(_Out):
    seq: int
    role: str
    kind: str
    text: str
    heard_text: str | None
    interrupted: bool
    started_at: datetime
    ended_at: datetime
    latency_ms: dict[str, float]


class EventOut(_Out):
    at: datetime
    kind: str
    data: dict[str, Any]


class RecordingOut(_Out):
    url: str
    duration_ms: int | None
    rate_hz: int
    channels: int


class CallPageOut(_Out):
    calls: list[CallOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class CallDetailOut(_Out):
    call: CallOut
    turns: list[TurnOut]
    events: list[EventOut]
    recording: RecordingOut | None


class PlaceCallIn(_Out):
    to: str = Field(pattern=E164)
    from_: str | None = Field(None, alias="from", pattern=E164)


class PlacedOut(_Out):
    sid: str
    status: str


class TransferIn(_Out):
    to: str = Field(pattern=E164)


class HangupIn(_Out):
    """Optional: what the bot says before it hangs up (only while its stream is live)."""

    message: str | None = Field(None, max_length=2000)


class SayIn(_Out):
    text: str = Field(min_length=1, max_length=2000)


class ControlOut(_Out):
    sid: str
    ok: bool
    detail: str


# ------------------------------------------------------------------ routes


@router.get("/calls", response_model=CallPageOut, response_model_by_alias=True)
async def calls(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: str | None = None,
    from_number: Annotated[str | None, Query(alias="from")] = None,
    to_number: Annotated[str | None, Query(alias="to")] = None,
    since: datetime | None = None,
) -> CallPageOut:
    """Recent calls, newest first; ``since`` is an ISO time (UTC if no offset)."""
    store = _store(request)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    page = await list_calls(
        store.database,
        CallFilter(status=status, from_number=from_number, to_number=to_number, since=since),
        limit=limit,
        offset=offset,
    )
    return CallPageOut(
        calls=[_call_out(row.call, row.turns) for row in page.rows],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
    )


@router.get("/calls/{sid}", response_model=CallDetailOut, response_model_by_alias=True)
async def call_detail(request: Request, sid: str) -> CallDetailOut:
    detail = await get_call(_store(request).database, sid)
    if detail is None:
        raise HTTPException(404, f"no call {sid}")
    return CallDetailOut(
        call=_call_out(detail.call, len(detail.turns)),
        turns=[_turn_out(t) for t in detail.turns],
        events=[_event_out(e) for e in detail.events],
        recording=_recording_out(detail.recording),
    )


@router.get(
    "/calls/{sid}/recording",
    response_class=StreamingResponse,
    responses={200: {"content": {"audio/wav": {}}}},
)
async def recording(request: Request, sid: str) -> StreamingResponse:
    """Stereo WAV, caller left, bot right; valid even while the call is still going."""
    return await recording_response(request, sid)


async def recording_response(
    request: Request, sid: str, *, disposition: str = "attachment"
) -> StreamingResponse:
    """The recording route's body, shared with the dashboard's player."""
    detail = await get_call(_store(request).database, sid)
    if detail is None:
        raise HTTPException(404, f"no call {sid}")
    path = anyio.Path(detail.recording.path) if detail.recording else None
    if path is None or not await path.is_file():
        raise HTTPException(404, f"call {sid} has no recording")
    # A live recording grows while we send it: send the part that exists now, with a
    # header patched to say exactly that, so Content-Length and the WAV agree.
    size = (await path.stat()).st_size
    data_bytes = max(0, size - _WAV_HEADER_BYTES)
    data_bytes -= data_bytes % 4  # whole stereo PCM16 frames
    return StreamingResponse(
        _wav_snapshot(path, data_bytes),
        media_type="audio/wav",
        headers={
            "Content-Length": str(_WAV_HEADER_BYTES + data_bytes),
            "Content-Disposition": f'{disposition}; filename="{sid}.wav"',
        },
    )


@router.post("/calls", status_code=201, response_model=PlacedOut, response_model_by_alias=True)
async def place_call(request: Request, body: PlaceCallIn) -> PlacedOut:
    """Dial ``to``; when it answers, Twilio fetches our ``/voice`` and the agent talks."""
    edge: Edge = request.app.state.edge
    settings = edge.settings
    caller_id = body.from_ or settings.from_number
    if not caller_id:
        raise HTTPException(422, "no caller ID: pass 'from' or set TWILIO_PHONE_NUMBER")
    if not settings.public_url:
        raise HTTPException(409, "PUBLIC_URL is not set: Twilio needs it to reach /voice")
    rest = _rest(edge)
    try:
        sid = await rest.create_call(
            to=body.to,
            from_=caller_id,
            url=f"{settings.public_url}/voice",
            status_callback=f"{settings.public_url}/status",
        )
    except TwilioRestError as exc:
        raise HTTPException(502, str(exc)) from exc
    store: Store | None = request.app.state.store
    if store is not None:
        now = datetime.now(UTC)
        store.writer.submit(
            CallSeen(
                sid=sid,
                at=now,
                from_number=caller_id,
                to_number=body.to,
                direction="outbound-api",
                status="queued",
            )
        )
        store.writer.submit(EventHappened(sid=sid, at=now, kind="api_placed", data={}))
    return PlacedOut(sid=sid, status="queued")


@router.post("/calls/{sid}/hangup", response_model=ControlOut, response_model_by_alias=True)
async def hangup(request: Request, sid: str, body: HangupIn | None = None) -> ControlOut:
    """Ends the call; a call Twilio no longer knows (20404) is already over: still 200.

    A call whose stream is live on any instance is ended there (goodbye if ``message``,
    the turn recorded, then Twilio hang-up); otherwise through Twilio REST directly.
    """
    return await hangup_call(request, sid, body.message if body else None)


async def hangup_call(request: Request, sid: str, message: str | None = None) -> ControlOut:
    """Hang-up as the API does it (the dashboard's button calls this too)."""
    _check_sid(sid)
    control: CallControl = request.app.state.control
    result = await control.end(sid, message)
    if result is not None:
        _record(request, sid, "api_hangup", {"result": result})
        return ControlOut(sid=sid, ok=True, detail=result)
    try:
        ended = await _rest(request.app.state.edge).end_call(sid)
    except TwilioRestError as exc:
        raise HTTPException(502, str(exc)) from exc
    detail = "ended" if ended else "already over"
    _record(request, sid, "api_hangup", {"result": detail})
    return ControlOut(sid=sid, ok=True, detail=detail)


@router.post("/calls/{sid}/transfer", response_model=ControlOut, response_model_by_alias=True)
async def transfer(request: Request, sid: str, body: TransferIn) -> ControlOut:
    """Sends the caller to ``to`` with a ``<Dial>``; the agent's stream ends."""
    return await transfer_call(request, sid, body)


async def transfer_call(request: Request, sid: str, body: TransferIn) -> ControlOut:
    """Transfer as the API does it (the dashboard's form calls this too)."""
    _check_sid(sid)
    try:
        await _rest(request.app.state.edge).transfer_call(sid, twiml.dial(body.to))
    except TwilioRestError as exc:
        if exc.code == 20404:
            raise HTTPException(404, f"call {sid} is not live") from exc
        raise HTTPException(502, str(exc)) from exc
    _record(request, sid, "api_transfer", {"to": body.to})
    return ControlOut(sid=sid, ok=True, detail=f"transferred to {body.to}")


@router.post("/calls/{sid}/say", response_model=ControlOut, response_model_by_alias=True)
async def say(request: Request, sid: str, body: SayIn) -> ControlOut:
    """The bot says ``text`` at its next pause, on whichever instance holds the call."""
    _check_sid(sid)
    control: CallControl = request.app.state.control
    if not await control.say(sid, body.text):
        raise HTTPException(404, f"call {sid} is not live on any instance")
    _record(request, sid, "api_say", {"chars": len(body.text)})
    return ControlOut(sid=sid, ok=True, detail="queued")


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry: Metrics | None = request.app.state.metrics
    if registry is None:
        raise HTTPException(404, "metrics are off")
    return Response(registry.render(), media_type=CONTENT_TYPE)


# ------------------------------------------------------------------ helpers


def _store(request: Request) -> Store:
    store: Store | None = request.app.state.store
    if store is None:
        raise HTTPException(503, "this server keeps no call record")
    return store


def _rest(edge: Edge) -> TwilioRest:
    if edge.rest is None:
        raise HTTPException(503, "Twilio REST is not configured: set TWILIO_ACCOUNT_SID")
    return edge.rest


def _check_sid(sid: str) -> None:
    if not re.match(_CALL_SID, sid):
        raise HTTPException(422, f"expected a CallSid (CA + 32 hex digits), got {sid!r}")


def _record(request: Request, sid: str, kind: str, data: dict[str, Any]) -> None:
    store: Store | None = request.app.state.store
    if store is not None:
        store.writer.submit(EventHappened(sid=sid, at=datetime.now(UTC), kind=kind, data=data))


async def _wav_snapshot(path: anyio.Path, data_bytes: int) -> AsyncIterator[bytes]:
    async with await path.open("rb") as f:
        header = bytearray(await f.read(_WAV_HEADER_BYTES))
        header[4:8] = struct.pack("<I", _WAV_HEADER_BYTES - 8 + data_bytes)
        header[40:44] = struct.pack("<I", data_bytes)
        yield bytes(header)
        left = data_bytes
        while left > 0:
            chunk = await f.read(min(left, 64 * 1024))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def _call_out(call: Call, turns: int | None) -> CallOut:
    started = utc(call.started_at)
    ended = utc(call.ended_at)
    assert started is not None
    return CallOut.model_validate(
        {
            "sid": call.sid,
            "from": call.from_number,
            "to": call.to_number,
            "direction": call.direction,
            "status": call.status,
            "assistant": call.assistant,
            "outcome": call.outcome,
            "instance": call.instance,
            "startedAt": started,
            "endedAt": ended,
            "durationS": round((ended - started).total_seconds(), 3) if ended else None,
            "turns": turns,
        }
    )


def _turn_out(turn: Turn) -> TurnOut:
    started, ended = utc(turn.started_at), utc(turn.ended_at)
    assert started is not None and ended is not None
    return TurnOut(
        seq=turn.seq,
        role=turn.role,
        kind=turn.kind,
        text=turn.text,
        heard_text=turn.heard_text,
        interrupted=turn.interrupted,
        started_at=started,
        ended_at=ended,
        latency_ms=dict(turn.latency_ms or {}),
    )


def _event_out(event: Event) -> EventOut:
    at = utc(event.at)
    assert at is not None
    return EventOut(at=at, kind=event.kind, data=dict(event.data or {}))


def _recording_out(rec: Recording | None) -> RecordingOut | None:
    if rec is None or not Path(rec.path).is_file():
        return None
    return RecordingOut(
        url=f"/api/calls/{rec.call_sid}/recording",
        duration_ms=rec.duration_ms if rec.duration_ms is not None else _wav_ms(Path(rec.path)),
        rate_hz=rec.rate_hz,
        channels=rec.channels,
    )


def _wav_ms(path: Path) -> int | None:
    """After a crash the row has no duration; the file's (always valid) header does."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() * 1000 // w.getframerate()
    except (OSError, wave.Error, EOFError):
        return None
