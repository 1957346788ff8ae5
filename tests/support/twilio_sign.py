"""Sign requests exactly as Twilio does, with the SDK's own ``RequestValidator``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

__all__ = ["sign_form", "sign_json", "sign_url"]


def sign_form(auth_token: str, url: str, params: Mapping[str, str]) -> tuple[bytes, str]:
    """Form body and ``X-Twilio-Signature`` for a POST of ``params`` to ``url``."""
    signature = RequestValidator(auth_token).compute_signature(url, dict(params))
    return urlencode(params).encode(), signature


def sign_json(auth_token: str, url: str, body: bytes) -> tuple[str, str]:
    """Twilio's JSON webhooks: ``bodySHA256`` goes into the URL, the URL is signed."""
    sep = "&" if "?" in url else "?"
    signed_url = f"{url}{sep}bodySHA256={hashlib.sha256(body).hexdigest()}"
    return signed_url, RequestValidator(auth_token).compute_signature(signed_url, {})


def sign_url(auth_token: str, url: str) -> str:
    """A GET (e.g. the Media Streams WebSocket handshake): the URL alone is signed."""
    return str(RequestValidator(auth_token).compute_signature(url, {}))
