"""The start of a call as Twilio makes it: a signed ``/voice`` webhook, then the TwiML.

The form body carries the fields Twilio sends for an inbound call and the signature is
the twilio SDK's own ``compute_signature`` over the URL we post to, so the server's real
validation path is exercised, not a test bypass.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx
from twilio.request_validator import RequestValidator

from callbridge.errors import CallbridgeError
from callbridge.simulator.wire import new_sid

__all__ = ["CallOptions", "CallRefused", "TwimlPlan", "dial", "parse_twiml", "sign", "webhook_form"]


class CallRefused(CallbridgeError):
    """The server did not answer the webhook with TwiML (non-2xx, or not XML)."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"webhook answered HTTP {status_code}: {body[:200]}")
        self.status_code = status_code


@dataclass(frozen=True)
class CallOptions:
    """Who calls whom, and with which auth token the requests are signed.

    ``sign_token`` overrides the token used for signing (a forged call); ``None`` means
    the real one. ``public_url``: the origin Twilio would have used (the server checks
    signatures against it, e.g. behind a tunnel) while requests still go to ``base_url``.
    """

    base_url: str
    auth_token: str
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    account_sid: str = field(default_factory=lambda: new_sid("AC"))
    call_sid: str = field(default_factory=lambda: new_sid("CA"))
    webhook_path: str = "/voice"
    sign_token: str | None = None
    public_url: str | None = None

    @property
    def webhook_url(self) -> str:
        return self.base_url.rstrip("/") + self.webhook_path

    @property
    def signed_webhook_url(self) -> str:
        return (self.public_url or self.base_url).rstrip("/") + self.webhook_path

    def connect_url(self, stream_url: str) -> str:
        """Where to open the stream: the TwiML's URL, moved to ``base_url``'s host when a
        public origin stands in front of it (the signature still covers the TwiML's URL)."""
        if self.public_url is None:
            return stream_url
        base = urlsplit(self.base_url)
        scheme = "wss" if base.scheme == "https" else "ws"
        return urlunsplit(urlsplit(stream_url)._replace(scheme=scheme, netloc=base.netloc))


@dataclass(frozen=True)
class TwimlPlan:
    """What the TwiML told Twilio to do: stream somewhere, or say something and hang up."""

    stream_url: str | None
    parameters: dict[str, str]
    says: tuple[str, ...] = ()
    hangup: bool = False
    redirect: str | None = None  # <Redirect>: Twilio fetches this URL's TwiML next


def sign(token: str, url: str, params: dict[str, str] | None = None) -> str:
    signature: str = RequestValidator(token).compute_signature(url, params or {})
    return signature


def webhook_form(options: CallOptions) -> dict[str, str]:
    """The form Twilio posts for a ringing inbound call (geo fields left empty)."""
    form = {
        "AccountSid": options.account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": options.call_sid,
        "CallStatus": "ringing",
        "Called": options.to_number,
        "Caller": options.from_number,
        "Direction": "inbound",
        "From": options.from_number,
        "To": options.to_number,
    }
    for prefix in ("Called", "Caller", "From", "To"):
        for suffix in ("City", "Country", "State", "Zip"):
            form[prefix + suffix] = "US" if suffix == "Country" else ""
    return form


MAX_REDIRECTS = 5


async def dial(options: CallOptions, client: httpx.AsyncClient | None = None) -> TwimlPlan:
    """POST the signed webhook, following ``<Redirect>`` as Twilio does (same form, signed
    for the new URL); return the parsed TwiML or raise ``CallRefused``."""
    plan = await _fetch(options, options.webhook_url, options.signed_webhook_url, client)
    for _ in range(MAX_REDIRECTS):
        if plan.redirect is None:
            return plan
        plan = await _fetch(options, plan.redirect, plan.redirect, client)
    raise CallRefused(200, f"more than {MAX_REDIRECTS} <Redirect>s")


async def _fetch(
    options: CallOptions, url: str, signed_url: str, client: httpx.AsyncClient | None
) -> TwimlPlan:
    form = webhook_form(options)
    headers = {
        "X-Twilio-Signature": sign(options.sign_token or options.auth_token, signed_url, form),
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        "Accept": "*/*",
    }
    own = client is None
    http = client or httpx.AsyncClient(timeout=10.0)
    try:
        response = await http.post(url, data=form, headers=headers)
    finally:
        if own:
            await http.aclose()
    if not response.is_success:
        raise CallRefused(response.status_code, response.text)
    try:
        return parse_twiml(response.text)
    except ValueError as exc:
        raise CallRefused(response.status_code, f"not TwiML ({exc}): {response.text}") from exc


def parse_twiml(text: str) -> TwimlPlan:
    """Read the verbs the simulator acts on: ``<Connect><Stream>``, ``<Say>``, ``<Hangup>``."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"invalid XML: {exc}") from exc
    if root.tag != "Response":
        raise ValueError(f"expected <Response> at the root, got <{root.tag}>")
    says: list[str] = []
    for verb in root:
        if verb.tag == "Say":
            says.append(verb.text or "")
        elif verb.tag == "Hangup":
            return TwimlPlan(None, {}, tuple(says), hangup=True)
        elif verb.tag == "Redirect":
            if not (verb.text or "").strip():
                raise ValueError("expected a URL inside <Redirect>")
            return TwimlPlan(None, {}, tuple(says), redirect=(verb.text or "").strip())
        elif verb.tag == "Connect":
            stream = verb.find("Stream")
            if stream is None or not stream.get("url"):
                raise ValueError("expected <Stream url=…> inside <Connect>")
            parameters = {
                p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")
            }
            return TwimlPlan(stream.get("url"), parameters, tuple(says))
    return TwimlPlan(None, {}, tuple(says), hangup=True)
