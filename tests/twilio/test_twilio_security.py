"""Signature checks with requests signed by the SDK exactly as Twilio signs them."""

from __future__ import annotations

import ipaddress
import json

import pytest
from support.twilio_sign import sign_form, sign_json, sign_url

from callbridge.twilio.security import WebhookValidator, public_request_url

TOKEN = "12345678901234567890123456789012"
FORM = "application/x-www-form-urlencoded"
PARAMS = {
    "CallSid": "CA" + "1" * 32,
    "AccountSid": "AC" + "0" * 32,
    "From": "+15550001111",
    "To": "+15550002222",
    "CallStatus": "ringing",
    "CallerCity": "",  # Twilio signs empty values too
}


@pytest.fixture
def validator() -> WebhookValidator:
    return WebhookValidator(TOKEN)


def test_form_body_signed_by_twilio_passes(validator: WebhookValidator) -> None:
    url = "https://example.com/voice?tenant=a"
    body, sig = sign_form(TOKEN, url, PARAMS)
    assert validator.check(url, content_type=FORM, body=body, signature=sig).ok
    # charset in the content type changes nothing
    assert validator.check(url, content_type=FORM + "; charset=utf-8", body=body, signature=sig).ok


def test_port_variants_are_accepted(validator: WebhookValidator) -> None:
    body, sig = sign_form(TOKEN, "https://example.com:443/voice", PARAMS)
    assert validator.check(
        "https://example.com/voice", content_type=FORM, body=body, signature=sig
    ).ok


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda url, body, sig: (url, body, None), "missing"),
        (lambda url, body, sig: (url, body, ""), "missing"),
        (
            lambda url, body, sig: (url, body.replace(b"ringing", b"completed"), sig),
            "does not match",
        ),
        (lambda url, body, sig: ("https://example.com/status", body, sig), "does not match"),
        (lambda url, body, sig: ("https://evil.example/voice", body, sig), "does not match"),
        (lambda url, body, sig: ("http://example.com/voice", body, sig), "does not match"),
        (lambda url, body, sig: (url + "?x=1", body, sig), "does not match"),
        (lambda url, body, sig: (url, body + b"&Extra=1", sig), "does not match"),
        (lambda url, body, sig: (url, body, sign_form("x" * 32, url, PARAMS)[1]), "does not match"),
    ],
    ids=[
        "none",
        "empty",
        "tampered",
        "other-path",
        "other-host",
        "other-scheme",
        "query",
        "extra",
        "other-token",
    ],
)
def test_forged_or_replayed_requests_fail(validator: WebhookValidator, mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    url = "https://example.com/voice"
    body, sig = sign_form(TOKEN, url, PARAMS)
    url2, body2, sig2 = mutate(url, body, sig)
    verdict = validator.check(url2, content_type=FORM, body=body2, signature=sig2)
    assert not verdict.ok
    assert reason in verdict.reason


def test_repeated_form_keys_are_all_signed(validator: WebhookValidator) -> None:
    from twilio.request_validator import RequestValidator

    url = "https://example.com/status"
    body = b"CallSid=CA1&StatusCallbackEvent=ringing&StatusCallbackEvent=answered"

    class Multi(dict):  # how Flask/Django hand repeated keys to the SDK
        def getlist(self, key: str) -> list[str]:
            return {"CallSid": ["CA1"], "StatusCallbackEvent": ["ringing", "answered"]}[key]

    sig = RequestValidator(TOKEN).compute_signature(url, Multi(CallSid=1, StatusCallbackEvent=1))
    assert validator.check(url, content_type=FORM, body=body, signature=sig).ok
    dropped = b"CallSid=CA1&StatusCallbackEvent=ringing"
    assert not validator.check(url, content_type=FORM, body=dropped, signature=sig).ok


def test_json_body_with_body_sha256(validator: WebhookValidator) -> None:
    body = json.dumps({"CallSid": "CA1", "CallStatus": "completed"}).encode()
    url, sig = sign_json(TOKEN, "https://example.com/status", body)
    assert "bodySHA256=" in url
    assert validator.check(url, content_type="application/json", body=body, signature=sig).ok
    tampered = body.replace(b"completed", b"in-progress")
    assert not validator.check(
        url, content_type="application/json", body=tampered, signature=sig
    ).ok


def test_json_body_without_body_sha256_is_refused(validator: WebhookValidator) -> None:
    body = b'{"CallSid": "CA1"}'
    url = "https://example.com/status"
    sig = sign_url(TOKEN, url)
    verdict = validator.check(url, content_type="application/json", body=body, signature=sig)
    assert not verdict.ok and "bodySHA256" in verdict.reason


def test_hmac_sha256_when_twilio_says_so(validator: WebhookValidator) -> None:
    from twilio.request_validator import RequestValidator

    url = "https://example.com/voice"
    body, _ = sign_form(TOKEN, url, PARAMS)
    sig = RequestValidator(TOKEN).compute_signature(url, PARAMS, "HMAC_SHA256")
    settings = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    assert validator.check(
        url, content_type=FORM, body=body, signature=sig, signature_settings=settings
    ).ok
    assert not validator.check(url, content_type=FORM, body=body, signature=sig).ok


def test_websocket_handshake(validator: WebhookValidator) -> None:
    sig = sign_url(TOKEN, "wss://example.com/media")
    assert validator.check_handshake("wss://example.com/media", sig).ok
    assert not validator.check_handshake("wss://other.example/media", sig).ok
    assert not validator.check_handshake("wss://example.com/media", None).ok


# --- the URL Twilio called ------------------------------------------------------------

PROXY = [ipaddress.ip_network("10.0.0.0/8")]
FWD = {"x-forwarded-proto": "https", "x-forwarded-host": "calls.example.com"}


def _url(**kw: object) -> str:
    args: dict[str, object] = {
        "scheme": "http",
        "host": "127.0.0.1:8080",
        "path": "/voice",
        "query": "a=1",
        "headers": {},
        "client_ip": "127.0.0.1",
        "public_url": None,
        "trusted_proxies": [],
    }
    args.update(kw)
    return public_request_url(**args)  # type: ignore[arg-type]


def test_url_from_request_when_nothing_configured() -> None:
    assert _url() == "http://127.0.0.1:8080/voice?a=1"
    assert _url(query="") == "http://127.0.0.1:8080/voice"


def test_public_url_wins_and_keeps_path_and_query() -> None:
    assert (
        _url(public_url="https://calls.example.com", headers=FWD)
        == "https://calls.example.com/voice?a=1"
    )
    assert _url(
        public_url="https://calls.example.com", websocket=True, path="/media", query=""
    ) == ("wss://calls.example.com/media")


def test_forwarded_headers_only_from_trusted_proxies() -> None:
    assert (
        _url(headers=FWD, client_ip="10.1.2.3", trusted_proxies=PROXY)
        == "https://calls.example.com/voice?a=1"
    )
    assert (
        _url(headers=FWD, client_ip="192.0.2.9", trusted_proxies=PROXY)
        == "http://127.0.0.1:8080/voice?a=1"
    )
    assert (
        _url(headers=FWD, client_ip=None, trusted_proxies=PROXY)
        == "http://127.0.0.1:8080/voice?a=1"
    )
    chain = {
        "x-forwarded-proto": "https, http",
        "x-forwarded-host": "calls.example.com, lb.internal",
    }
    assert (
        _url(headers=chain, client_ip="10.1.2.3", trusted_proxies=PROXY)
        == "https://calls.example.com/voice?a=1"
    )
    ws = _url(headers=FWD, client_ip="10.1.2.3", trusted_proxies=PROXY, websocket=True, scheme="ws")
    assert ws == "wss://calls.example.com/voice?a=1"
