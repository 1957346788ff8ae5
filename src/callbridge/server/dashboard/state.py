"""What every dashboard route shares: the sessions, the templates, the live board, and
the checks that stand in front of each page and each action."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import HTTPException
from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from callbridge.server.dashboard.auth import Session, SessionKeeper, same_origin
from callbridge.server.edge import Edge
from callbridge.server.live_board import LiveBoard

__all__ = [
    "HERE",
    "Dashboard",
    "action_session",
    "dashboard_of",
    "page_session",
    "public_origin",
    "read_form",
    "render",
    "secure_cookies",
    "stream_session",
]

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make Origin "null"
    "Cache-Control": "no-store",
}


@dataclass
class Dashboard:
    keeper: SessionKeeper
    templates: Jinja2Templates
    board: LiveBoard


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def public_origin(request: Request) -> str:
    edge: Edge = request.app.state.edge
    parts = urlsplit(edge.url_of(request, path="/"))
    return f"{parts.scheme}://{parts.netloc}"


def secure_cookies(request: Request) -> bool:
    return public_origin(request).startswith("https://")


def page_session(request: Request) -> Session | Response:
    """A page's guard: the session, or the way to the login page (or 503 when off)."""
    dashboard = dashboard_of(request)
    if not dashboard.keeper.enabled:
        return render(request, "off.html", {}, status_code=503)
    session = dashboard.keeper.read(request)
    if session is None:
        return RedirectResponse("/dashboard/login", status_code=303)
    return session


def stream_session(request: Request) -> Session:
    """For what a script fetches (events, the recording): 401 instead of a redirect."""
    dashboard = dashboard_of(request)
    if not dashboard.keeper.enabled:
        raise HTTPException(503, "the dashboard is off: set CALLBRIDGE_API_TOKEN")
    session = dashboard.keeper.read(request)
    if session is None:
        raise HTTPException(401, "log in at /dashboard/login")
    return session


def action_session(request: Request, form: dict[str, str]) -> Session:
    """For a POST: a session, this site as the origin, and the session's CSRF token."""
    session = stream_session(request)
    if not same_origin(request, public_origin(request)):
        raise HTTPException(403, "cross-site request refused")
    offered = form.get("csrf") or request.headers.get("x-csrf-token")
    if not dashboard_of(request).keeper.csrf_ok(session, offered):
        raise HTTPException(403, "missing or wrong CSRF token")
    return session


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the only kind the pages send), last value wins."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    pairs = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in pairs.items()}


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    session: Session | None = None,
    status_code: int = 200,
) -> Response:
    context = {"session": session, "csrf": session.csrf if session else "", **context}
    response = dashboard_of(request).templates.TemplateResponse(
        request, template, context, status_code=status_code
    )
    response.headers.update(SECURITY_HEADERS)
    return response
