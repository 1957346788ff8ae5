"""``/api`` call control: place, hang up, transfer, and say — through Twilio REST or the
instance that holds the call's stream (``CallControl``), so any instance can act on any
call (DESIGN.md §10). Same bearer token as the reads in ``api.py``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import Field

from callbridge.server.api import ApiModel, require_token
from callbridge.server.control import CallControl
from callbridge.server.edge import Edge
from callbridge.store import Store
from callbridge.store.ops import CallSeen, EventHappened
from callbridge.twilio import twiml
from callbridge.twilio.rest import TwilioRest, TwilioRestError

__all__ = ["E164", "ControlOut", "TransferIn", "hangup_call", "router", "transfer_call"]

E164 = r"^\+[1-9][0-9]{1,14}$"
_CALL_SID = r"^CA[0-9a-fA-F]{32}$"

router = APIRouter(prefix="/api", tags=["calls"], dependencies=[Depends(require_token)])


class PlaceCallIn(ApiModel):
    to: str = Field(pattern=E164)
    from_: str | None = Field(None, alias="from", pattern=E164)


class PlacedOut(ApiModel):
    sid: str
    status: str


class TransferIn(ApiModel):
    to: str = Field(pattern=E164)


class HangupIn(ApiModel):
    """Optional: what the bot says before it hangs up (only while its stream is live)."""

    message: str | None = Field(None, max_length=2000)


class SayIn(ApiModel):
    text: str = Field(min_length=1, max_length=2000)


class ControlOut(ApiModel):
    sid: str
    ok: bool
    detail: str


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
