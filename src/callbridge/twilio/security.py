"""Twilio signature checks against the URL Twilio actually called.

Twilio signs the public URL it requested (``https://example.com/voice?x=1``), not the one
our socket sees behind a proxy or tunnel (``http://127.0.0.1:8080/voice?x=1``). So the
scheme and host come from ``PUBLIC_URL`` or, when the direct peer is a trusted proxy,
from its ``X-Forwarded-Proto``/``X-Forwarded-Host``; the path and query always come from
the request. The arithmetic itself is the SDK's ``RequestValidator``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from twilio.request_validator import RequestValidator, get_signature_algorithm

__all__ = [
    "IPNetwork",
    "SignatureVerdict",
    "WebhookValidator",
    "form_params",
    "public_request_url",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_WS = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_HTTP = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def public_request_url(
    *,
    scheme: str,
    host: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    client_ip: str | None,
    public_url: str | None,
    trusted_proxies: Sequence[IPNetwork],
    websocket: bool = False,
) -> str:
    """The URL the far end requested, as it would have signed it.

    ``scheme``/``host``/``path``/``query`` are what our server saw (``host`` is the Host
    header); ``headers`` must be case-insensitive or lower-cased.
    """
    origin_scheme, origin_host = scheme, host
    if public_url:
        parts = urlsplit(public_url)
        origin_scheme, origin_host = parts.scheme, parts.netloc
    elif _is_trusted(client_ip, trusted_proxies):
        # A chain of proxies lists the hop nearest the caller first.
        proto = _first(headers.get("x-forwarded-proto"))
        fwd_host = _first(headers.get("x-forwarded-host"))
        origin_scheme = proto or origin_scheme
        origin_host = fwd_host or origin_host
    origin_scheme = (_WS if websocket else _HTTP).get(origin_scheme.lower(), origin_scheme)
    url = f"{origin_scheme}://{origin_host}{path or '/'}"
    return f"{url}?{query}" if query else url


@dataclass(frozen=True, slots=True)
class SignatureVerdict:
    ok: bool
    reason: str


class WebhookValidator:
    """Checks ``X-Twilio-Signature`` for form bodies, JSON bodies and WebSocket handshakes."""

    def __init__(self, auth_token: str) -> None:
        if not auth_token:
            raise ValueError("an auth token is required to check signatures")
        self._validator = RequestValidator(auth_token)

    def check(
        self,
        url: str,
        *,
        content_type: str,
        body: bytes,
        signature: str | None,
        signature_settings: str | None = None,
    ) -> SignatureVerdict:
        """Check one HTTP request. ``content_type`` decides how the body is signed."""
        if not signature:
            return SignatureVerdict(False, "missing X-Twilio-Signature")
        algorithm = get_signature_algorithm(signature_settings)
        media_type = content_type.split(";", 1)[0].strip().lower()
        params: Any
        if "bodySHA256" in parse_qs(urlsplit(url).query):
            # JSON (or any raw) body: the URL carries the body's SHA-256 and is what is
            # signed; the SDK checks both.
            try:
                params = body.decode("utf-8")
            except UnicodeDecodeError:
                return SignatureVerdict(False, "body is not UTF-8")
        elif media_type in ("application/x-www-form-urlencoded", "") or not body:
            try:
                params = form_params(body)
            except UnicodeDecodeError:
                return SignatureVerdict(False, "form body is not UTF-8")
        else:
            return SignatureVerdict(False, f"{media_type} body without bodySHA256 in the URL")
        if self._validator.validate(url, params, signature, algorithm):
            return SignatureVerdict(True, "ok")
        return SignatureVerdict(False, "signature does not match")

    def check_handshake(self, url: str, signature: str | None) -> SignatureVerdict:
        """A WebSocket upgrade is a GET: the signature covers the wss URL alone."""
        if not signature:
            return SignatureVerdict(False, "missing X-Twilio-Signature")
        if self._validator.validate(url, {}, signature):
            return SignatureVerdict(True, "ok")
        return SignatureVerdict(False, "signature does not match")


class _MultiParams:
    """Repeated form keys (``a=1&a=2``) are all signed; the SDK reads them via getlist."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self._items])

    def __bool__(self) -> bool:
        return bool(self._items)

    def getlist(self, key: str) -> list[str]:
        return [v for k, v in self._items if k == key]


def form_params(body: bytes) -> _MultiParams:
    """Parse a form body keeping blank values: Twilio signs ``CallerCity=`` too."""
    return _MultiParams(parse_qsl(body.decode("utf-8"), keep_blank_values=True))


def _first(value: str | None) -> str:
    return value.split(",", 1)[0].strip() if value else ""


def _is_trusted(client_ip: str | None, trusted: Sequence[IPNetwork]) -> bool:
    if not client_ip or not trusted:
        return False
    try:
        ip = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(ip in net for net in trusted)
