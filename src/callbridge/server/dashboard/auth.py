"""The dashboard's sessions: log in once with the API token, then a cookie, never a URL.

- The session cookie is ``<id>.<expiry>.<mac>``, signed with a key derived from
  ``CALLBRIDGE_API_TOKEN``: rotating the token logs everybody out. It is HttpOnly,
  SameSite=Strict, and Secure whenever the page was reached over https (directly or
  through a trusted proxy's ``X-Forwarded-Proto``).
- Every action (POST) carries a CSRF token bound to the session (an HMAC of its id),
  in the form or in ``X-CSRF-Token``; a cross-site ``Origin``/``Sec-Fetch-Site`` is
  refused as well. The login form, which has no session yet, uses a double-submit
  nonce cookie.
- Logging out revokes the session id in this process (a copied cookie stops working
  here); other instances see it expire (``SESSION_S``).
- Wrong tokens are rationed: after ``MAX_FAILURES`` in ``FAILURE_WINDOW_S`` (from anyone,
  per process) the login answers 429 until the window moves on.
- No ``CALLBRIDGE_API_TOKEN``: the dashboard is off, like the API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "COOKIE_PATH",
    "FAILURE_WINDOW_S",
    "LOGIN_COOKIE",
    "MAX_FAILURES",
    "SESSION_COOKIE",
    "SESSION_S",
    "Session",
    "SessionKeeper",
    "clear_cookies",
    "same_origin",
    "set_login_cookie",
    "set_session_cookie",
]

SESSION_COOKIE = "cb_session"
LOGIN_COOKIE = "cb_login"
SESSION_S = 12 * 3600
MAX_FAILURES = 20
FAILURE_WINDOW_S = 60.0
COOKIE_PATH = "/dashboard"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    expires_at: int
    csrf: str


@dataclass
class SessionKeeper:
    """Mints, reads and revokes sessions; ``token`` reads the current API token."""

    token: Callable[[], str | None]
    clock: Callable[[], float] = time.time
    _revoked: dict[str, int] = field(default_factory=dict)
    _failures: list[float] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.token())

    def check_token(self, offered: str) -> bool:
        expected = self.token()
        if not expected:
            return False
        if hmac.compare_digest(offered.encode(), expected.encode()):
            return True
        self._failures.append(self.clock())
        return False

    def throttled(self) -> bool:
        """Too many wrong tokens lately: refuse to even compare (guessing gets slow)."""
        since = self.clock() - FAILURE_WINDOW_S
        self._failures = [t for t in self._failures if t > since]
        return len(self._failures) >= MAX_FAILURES

    def mint(self) -> tuple[Session, str]:
        """A new session and its cookie value."""
        key = self._key()
        sid = secrets.token_urlsafe(18)
        expires = int(self.clock()) + SESSION_S
        body = f"{sid}.{expires}"
        return Session(sid, expires, _csrf(key, sid)), f"{body}.{_mac(key, body)}"

    def read(self, request: Request) -> Session | None:
        value = request.cookies.get(SESSION_COOKIE)
        if not value or not self.enabled:
            return None
        sid, _, rest = value.partition(".")
        expires_s, _, mac = rest.partition(".")
        key = self._key()
        if not sid or not expires_s.isdigit() or not mac:
            return None
        if not hmac.compare_digest(mac, _mac(key, f"{sid}.{expires_s}")):
            return None
        expires = int(expires_s)
        if expires <= self.clock() or sid in self._revoked:
            return None
        return Session(sid, expires, _csrf(key, sid))

    def revoke(self, session: Session) -> None:
        now = self.clock()
        self._revoked = {s: t for s, t in self._revoked.items() if t > now}
        self._revoked[session.id] = session.expires_at

    def csrf_ok(self, session: Session, offered: str | None) -> bool:
        return bool(offered) and hmac.compare_digest(str(offered), session.csrf)

    def _key(self) -> bytes:
        token = self.token() or ""
        return hmac.new(token.encode(), b"callbridge dashboard session v1", hashlib.sha256).digest()


def set_session_cookie(response: Response, value: str, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def set_login_cookie(response: Response, nonce: str, *, secure: bool) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def clear_cookies(response: Response) -> None:
    for name in (SESSION_COOKIE, LOGIN_COOKIE):
        response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict")


def same_origin(request: Request, public_origin: str) -> bool:
    """A browser says where a request came from; anything but this site is refused."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.rstrip("/") == public_origin.rstrip("/")


def _mac(key: bytes, body: str) -> str:
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _csrf(key: bytes, sid: str) -> str:
    return _mac(key, "csrf:" + sid)
