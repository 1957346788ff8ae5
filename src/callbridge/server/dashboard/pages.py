"""The pages that read the store: log in and out, the calls list, one call, the overview."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from callbridge.server.api import recording_response
from callbridge.server.dashboard import charts, views
from callbridge.server.dashboard.auth import (
    LOGIN_COOKIE,
    clear_cookies,
    same_origin,
    set_login_cookie,
    set_session_cookie,
)
from callbridge.server.dashboard.state import (
    action_session,
    dashboard_of,
    page_session,
    public_origin,
    read_form,
    render,
    secure_cookies,
    stream_session,
)
from callbridge.store import Store
from callbridge.store.models import utc
from callbridge.store.overview import load_overview
from callbridge.store.repository import get_call
from callbridge.store.search import CallQuery, SortKey, search_calls

__all__ = ["STATUSES", "WINDOWS", "router"]

router = APIRouter(prefix="/dashboard", include_in_schema=False)

STATUSES = (
    "queued",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
)
WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
PAGE_SIZE = 50


@router.get("")
async def index() -> Response:
    return RedirectResponse("/dashboard/live", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    if not dashboard_of(request).keeper.enabled:
        return render(request, "off.html", {}, status_code=503)
    return _login_form(request)


@router.post("/login")
async def login(request: Request) -> Response:
    keeper = dashboard_of(request).keeper
    if not keeper.enabled:
        return render(request, "off.html", {}, status_code=503)
    form = await read_form(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if (
        not same_origin(request, public_origin(request))
        or not nonce
        or (not secrets.compare_digest(nonce, form.get("nonce", "")))
    ):
        return _login_form(request, "The form expired or came from another site; try again.", 403)
    if keeper.throttled():
        return _login_form(request, "Too many wrong tokens; wait a minute.", 429)
    if not keeper.check_token(form.get("token", "")):
        return _login_form(request, "Wrong token.", 401)
    _, cookie = keeper.mint()
    response = RedirectResponse("/dashboard/live", status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path="/dashboard")
    set_session_cookie(response, cookie, secure=secure_cookies(request))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = action_session(request, await read_form(request))
    dashboard_of(request).keeper.revoke(session)
    response = RedirectResponse("/dashboard/login", status_code=303)
    clear_cookies(response)
    return response


@router.get("/calls")
async def calls_page(request: Request) -> Response:
    session = page_session(request)
    if isinstance(session, Response):
        return session
    query, form, problems = _call_query(request.query_params)
    page = await search_calls(_store(request).database, query)

    def link(**changes: Any) -> str:
        values = {k: v for k, v in {**form, **changes}.items() if v not in ("", None)}
        return "/dashboard/calls?" + urlencode(values)

    return render(
        request,
        "calls.html",
        {
            "page": "calls",
            "result": page,
            "form": form,
            "problems": problems,
            "statuses": STATUSES,
            "link": link,
            "query": query,
        },
        session=session,
    )


@router.get("/calls/{sid}")
async def call_page(request: Request, sid: str) -> Response:
    session = page_session(request)
    if isinstance(session, Response):
        return session
    detail = await get_call(_store(request).database, sid)
    if detail is None:
        return render(request, "missing.html", {"sid": sid}, session=session, status_code=404)
    call = detail.call
    started = utc(call.started_at)
    ended = utc(call.ended_at)
    assert started is not None
    duration_s = (
        (ended - started).total_seconds()
        if ended
        else ((datetime.now(UTC) - started).total_seconds())
    )
    recording_started = utc(detail.recording.created_at) if detail.recording else None
    bubbles = views.conversation(detail.turns, recording_started or started)
    falls = [w for t in detail.turns if (w := views.waterfall(t)) is not None]
    return render(
        request,
        "call.html",
        {
            "page": "call",
            "call": call,
            "started": started,
            "ended": ended,
            "duration_s": duration_s,
            "bubbles": bubbles,
            "waterfalls": falls,
            "marks": views.timeline(detail.events, started, duration_s),
            "recording": detail.recording,
        },
        session=session,
    )


@router.get("/calls/{sid}/recording")
async def recording(request: Request, sid: str) -> StreamingResponse:
    stream_session(request)
    return await recording_response(request, sid, disposition="inline")


@router.get("/overview")
async def overview_page(request: Request) -> Response:
    session = page_session(request)
    if isinstance(session, Response):
        return session
    window = request.query_params.get("window", "24h")
    if window not in WINDOWS:
        window = "24h"
    until = datetime.now(UTC)
    since = until - WINDOWS[window]
    overview = await load_overview(_store(request).database, since, until)
    return render(
        request,
        "overview.html",
        {
            "page": "overview",
            "overview": overview,
            "window": window,
            "windows": list(WINDOWS),
            "series": charts.series(overview),
        },
        session=session,
    )


# ------------------------------------------------------------------ helpers


def _login_form(request: Request, error: str = "", status_code: int = 200) -> Response:
    nonce = secrets.token_urlsafe(18)
    response = render(
        request,
        "login.html",
        {"nonce": nonce, "error": error, "page": "login"},
        status_code=status_code,
    )
    set_login_cookie(response, nonce, secure=secure_cookies(request))
    return response


def _store(request: Request) -> Store:
    store: Store | None = request.app.state.store
    if store is None:
        raise HTTPException(503, "this server keeps no call record")
    return store


def _call_query(params: Any) -> tuple[CallQuery, dict[str, str], list[str]]:
    """The list's query string → a query; what could not be read is said, not guessed."""
    form = {k: str(params.get(k, "")).strip() for k in _FORM_KEYS}
    problems: list[str] = []
    since = _day(form["since"], "from", problems)
    until = _day(form["until"], "to", problems)
    sort = _SORTS.get(form["sort"], "started")
    try:
        page_no = max(1, int(form["page"] or 1))
    except ValueError:
        page_no, form["page"] = 1, ""
    query = CallQuery(
        since=since,
        until=until + timedelta(days=1) if until else None,
        number=form["number"] or None,
        status=form["status"] if form["status"] in STATUSES else None,
        assistant=form["assistant"] or None,
        had_fault=_tristate(form["fault"]),
        had_barge_in=_tristate(form["bargein"]),
        sort=sort,
        descending=form["dir"] != "asc",
        limit=PAGE_SIZE,
        offset=(page_no - 1) * PAGE_SIZE,
    )
    return query, form, problems


_FORM_KEYS = (
    "since",
    "until",
    "number",
    "status",
    "assistant",
    "fault",
    "bargein",
    "sort",
    "dir",
    "page",
)


_SORTS: dict[str, SortKey] = {"started": "started", "duration": "duration", "latency": "latency"}


def _day(text: str, name: str, problems: list[str]) -> datetime | None:
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        problems.append(f"'{name}' is not a date (YYYY-MM-DD): ignored")
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _tristate(text: str) -> bool | None:
    return {"yes": True, "no": False}.get(text)
