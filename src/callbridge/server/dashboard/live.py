"""The live calls: the page, its event stream, and the Hang up / Transfer actions.

The stream is server-sent events: the board's rows as JSON whenever they change (the
phase is re-read every ``POLL_S``), a comment now and then to keep proxies from timing
out. A stream ends after ``STREAM_S`` and the browser reconnects by itself, so a server
that is shutting down never waits on a dashboard tab for long.

The actions call the same functions as ``/api`` (``hangup_call``, ``transfer_call``):
Twilio REST, and the ``api_hangup``/``api_transfer`` event in the call's record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import quote, unquote

from fastapi import APIRouter, HTTPException
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from callbridge.server.api_control import TransferIn, hangup_call, transfer_call
from callbridge.server.dashboard.auth import COOKIE_PATH
from callbridge.server.dashboard.state import (
    action_session,
    dashboard_of,
    page_session,
    read_form,
    render,
    secure_cookies,
    stream_session,
)

__all__ = ["POLL_S", "STREAM_S", "router"]

POLL_S = 0.5
STREAM_S = 20.0
KEEPALIVE_S = 10.0
NOTICE_COOKIE = "cb_notice"

router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.get("/live")
async def live_page(request: Request) -> Response:
    session = page_session(request)
    if isinstance(session, Response):
        return session
    rows = dashboard_of(request).board.rows()
    notice = request.cookies.get(NOTICE_COOKIE, "")
    response = render(
        request,
        "live.html",
        {"rows": rows, "notice": unquote(notice)[:200], "page": "live"},
        session=session,
    )
    if notice:
        response.delete_cookie(NOTICE_COOKIE, path=COOKIE_PATH)
    return response


@router.get("/live/events")
async def live_events(request: Request) -> StreamingResponse:
    stream_session(request)
    board = dashboard_of(request).board

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STREAM_S
        quiet_since = loop.time()
        last = None
        yield "retry: 1000\n\n"
        while loop.time() < deadline and not await request.is_disconnected():
            payload = json.dumps([row.as_json() for row in board.rows()], separators=(",", ":"))
            if payload != last:
                last = payload
                quiet_since = loop.time()
                yield f"event: calls\ndata: {payload}\n\n"
            elif loop.time() - quiet_since > KEEPALIVE_S:
                quiet_since = loop.time()
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post("/calls/{sid}/hangup")
async def hangup(request: Request, sid: str) -> Response:
    action_session(request, await read_form(request))
    try:
        result = await hangup_call(request, sid)
    except HTTPException as exc:
        return _answer(request, False, str(exc.detail), exc.status_code)
    return _answer(request, True, f"hang-up: {result.detail}")


@router.post("/calls/{sid}/transfer")
async def transfer(request: Request, sid: str) -> Response:
    form = await read_form(request)
    action_session(request, form)
    try:
        body = TransferIn(to=form.get("to", "").strip())
    except ValidationError:
        return _answer(request, False, "transfer: expected a number like +15551234567", 422)
    try:
        result = await transfer_call(request, sid, body)
    except HTTPException as exc:
        return _answer(request, False, str(exc.detail), exc.status_code)
    return _answer(request, True, result.detail)


def _answer(request: Request, ok: bool, detail: str, status_code: int = 200) -> Response:
    """JSON for the page's script; a redirect back to the live page for a plain form."""
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": ok, "detail": detail}, status_code=status_code)
    # The outcome rides in a short-lived cookie, not the URL: a link cannot put words
    # on the operator's page.
    response = RedirectResponse("/dashboard/live", status_code=303)
    response.set_cookie(
        NOTICE_COOKIE,
        quote(detail[:200]),
        max_age=60,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
    )
    return response
