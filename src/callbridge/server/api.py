"""``/api``: the call record over HTTP, behind a bearer token (call control, with the same
token, is ``api_control.py``).

Reads come from the store, so any instance answers for any call (DESIGN.md §10).
Without ``CALLBRIDGE_API_TOKEN`` the API is off (503), never open. ``/metrics``
(Prometheus) is outside the token, like ``/healthz``: scrapers on the private network
read it.
"""

from __future__ import annotations

import hmac
import logging
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

from callbridge.server.edge import Edge
from callbridge.store import Store
from callbridge.store.models import Call, Event, Recording, Turn, utc
from callbridge.store.repository import CallFilter, get_call, list_calls
from callbridge.telemetry.logging import log_event
from callbridge.telemetry.metrics import CONTENT_TYPE, Metrics

__all__ = ["ApiModel", "metrics_router", "recording_response", "require_token", "router"]

log = logging.getLogger(__name__)

_WAV_HEADER_BYTES = 44  # IncrementalWavWriter's canonical RIFF header

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


class ApiModel(BaseModel):
    """camelCase on the wire, as Twilio's own API and the dashboard's JSON."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CallOut(ApiModel):
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


class TurnOut(ApiModel):
    seq: int
    role: str
    kind: str
    text: str
    heard_text: str | None
    interrupted: bool
    started_at: datetime
    ended_at: datetime
    latency_ms: dict[str, float]


class EventOut(ApiModel):
    at: datetime
    kind: str
    data: dict[str, Any]


class RecordingOut(ApiModel):
    url: str
    duration_ms: int | None
    rate_hz: int
    channels: int


class CallPageOut(ApiModel):
    calls: list[CallOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class CallDetailOut(ApiModel):
    call: CallOut
    turns: list[TurnOut]
    events: list[EventOut]
    recording: RecordingOut | None


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
