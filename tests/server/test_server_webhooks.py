"""POST /voice and /status on a real uvicorn, signed by the SDK as Twilio signs them."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable

import httpx
import pytest
from support import twilio_stream as tw
from support.calls import answer_call
from support.server import running_server
from support.twilio_sign import sign_form, sign_json

from callbridge.server.app import create_app
from callbridge.settings import Settings
from callbridge.telemetry.logging import CallContextFilter
from callbridge.twilio.tokens import StreamTokens

from .conftest import AUTH_TOKEN

PUBLIC = "https://calls.example.com"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

ClientFor = Callable[[str], httpx.AsyncClient]
MakeSettings = Callable[..., Settings]


def _params(call_sid: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": tw.ACCOUNT_SID,
        "From": "+15550001111",
        "To": "+15550002222",
        "CallStatus": "ringing",
        **extra,
    }


async def test_signed_voice_webhook_gets_connect_stream_twiml(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    settings = make_settings(public_url=PUBLIC)
    async with running_server(create_app(settings)) as base:
        answered = await answer_call(client_for(base), PUBLIC, AUTH_TOKEN)
    assert answered.stream_url == "wss://calls.example.com/media"
    p = answered.params
    assert (p["callSid"], p["from"], p["to"]) == (answered.call_sid, "+15550001111", "+15550002222")
    assert settings.stream_secret is not None
    claims = StreamTokens(settings.stream_secret.get_secret_value()).verify(
        p["token"], answered.call_sid
    )
    assert claims.call_sid == answered.call_sid


@pytest.mark.parametrize("case", ["unsigned", "forged", "other-url", "other-host", "tampered"])
async def test_bad_signatures_get_403_and_nothing_else(
    make_settings: MakeSettings, client_for: ClientFor, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    app = create_app(make_settings(public_url=PUBLIC))
    params = _params(tw.call_sid())
    body, sig = sign_form(AUTH_TOKEN, f"{PUBLIC}/voice", params)
    headers = {**FORM, "X-Twilio-Signature": sig}
    if case == "unsigned":
        del headers["X-Twilio-Signature"]
    elif case == "forged":
        headers["X-Twilio-Signature"] = sign_form("f" * 32, f"{PUBLIC}/voice", params)[1]
    elif case == "other-url":  # a genuine signature for /status, replayed to /voice
        headers["X-Twilio-Signature"] = sign_form(AUTH_TOKEN, f"{PUBLIC}/status", params)[1]
    elif case == "other-host":  # a genuine request to someone else's server, replayed here
        headers["X-Twilio-Signature"] = sign_form(
            AUTH_TOKEN, "https://other.example/voice", params
        )[1]
    elif case == "tampered":
        body = body.replace(b"%2B15550001111", b"%2B15559999999")
    caplog.set_level(logging.WARNING)
    async with running_server(app) as base:
        resp = await client_for(base).post("/voice", content=body, headers=headers)
    assert resp.status_code == 403
    assert "<Response" not in resp.text
    assert app.state.edge.stats.webhooks_rejected == 1
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "webhook.rejected"]
    assert sig not in record.getMessage()


async def test_json_webhook_with_body_sha256(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    app = create_app(make_settings(public_url=PUBLIC))
    call_sid = tw.call_sid()
    body = json.dumps(_params(call_sid)).encode()
    url, sig = sign_json(AUTH_TOKEN, f"{PUBLIC}/voice", body)
    path = url.removeprefix(PUBLIC)
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": sig}
    async with running_server(app) as base:
        client = client_for(base)
        ok = await client.post(path, content=body, headers=headers)
        tampered = await client.post(
            path, content=body.replace(b"ringing", b"queued"), headers=headers
        )
    assert ok.status_code == 200
    stream = ET.fromstring(ok.text).find("./Connect/Stream")
    assert stream is not None
    assert {p.attrib["name"]: p.attrib["value"] for p in stream}["callSid"] == call_sid
    assert tampered.status_code == 403


async def test_trusted_proxy_headers_rebuild_the_public_url(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    params = _params(tw.call_sid())
    body, sig = sign_form(AUTH_TOKEN, "https://tunnel.example/voice", params)
    fwd = {
        **FORM,
        "X-Twilio-Signature": sig,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "tunnel.example",
    }
    trusted = create_app(make_settings(trusted_proxies="127.0.0.0/8"))
    untrusted = create_app(make_settings(trusted_proxies="10.0.0.0/8"))
    async with running_server(trusted) as a, running_server(untrusted) as b:
        via_proxy = await client_for(a).post("/voice", content=body, headers=fwd)
        spoofed = await client_for(b).post("/voice", content=body, headers=fwd)
    assert via_proxy.status_code == 200
    stream = ET.fromstring(via_proxy.text).find("./Connect/Stream")
    assert stream is not None and stream.attrib["url"] == "wss://tunnel.example/media"
    assert spoofed.status_code == 403


async def test_without_public_url_the_request_url_is_used(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    async with running_server(create_app(make_settings())) as base:
        answered = await answer_call(client_for(base), base, AUTH_TOKEN)
    assert answered.stream_url == base.replace("http://", "ws://") + "/media"


async def test_status_callback_is_validated_and_logged(
    make_settings: MakeSettings, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    call_sid = tw.call_sid()
    params = _params(call_sid, CallStatus="completed", CallDuration="42")
    body, sig = sign_form(AUTH_TOKEN, f"{PUBLIC}/status", params)
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(CallContextFilter())
    async with running_server(create_app(make_settings(public_url=PUBLIC))) as base:
        client = client_for(base)
        ok = await client.post("/status", content=body, headers={**FORM, "X-Twilio-Signature": sig})
        bad = await client.post("/status", content=body, headers=FORM)
    assert (ok.status_code, bad.status_code) == (204, 403)
    [rec] = [r for r in caplog.records if getattr(r, "event", "") == "call.status"]
    assert rec.fields["status"] == "completed"  # type: ignore[attr-defined]
    assert rec.call_sid == call_sid  # type: ignore[attr-defined]


async def test_insecure_mode_accepts_unsigned_and_warns_every_time(
    make_settings: MakeSettings, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(auth_token=None, insecure_skip_signature=True)
    caplog.set_level(logging.WARNING)
    async with running_server(create_app(settings)) as base:
        client = client_for(base)
        for _ in range(3):
            resp = await client.post("/voice", data=_params(tw.call_sid()))
            assert resp.status_code == 200
    warnings = [r for r in caplog.records if "SIGNATURE CHECKS ARE OFF" in r.getMessage()]
    assert len(warnings) >= 3 + 1  # once at start-up, then on every request


async def test_at_capacity_calls_are_refused_politely(
    make_settings: MakeSettings, client_for: ClientFor
) -> None:
    app = create_app(make_settings(public_url=PUBLIC, max_calls=1))
    app.state.edge.stats.active_calls = 1  # as if one stream were live
    params = _params(tw.call_sid())
    body, sig = sign_form(AUTH_TOKEN, f"{PUBLIC}/voice", params)
    async with running_server(app) as base:
        resp = await client_for(base).post(
            "/voice", content=body, headers={**FORM, "X-Twilio-Signature": sig}
        )
    assert resp.status_code == 200
    assert [c.tag for c in ET.fromstring(resp.text)] == ["Say", "Hangup"]
    assert app.state.edge.stats.overflow_total == 1


async def test_bad_requests(make_settings: MakeSettings, client_for: ClientFor) -> None:
    app = create_app(make_settings(public_url=PUBLIC))
    no_sid = {"AccountSid": tw.ACCOUNT_SID}
    body, sig = sign_form(AUTH_TOKEN, f"{PUBLIC}/voice", no_sid)
    async with running_server(app) as base:
        client = client_for(base)
        missing = await client.post(
            "/voice", content=body, headers={**FORM, "X-Twilio-Signature": sig}
        )
        huge = await client.post("/voice", content=b"a=" + b"x" * 70_000, headers=FORM)
        health = await client.get("/healthz")
    assert missing.status_code == 400
    assert huge.status_code == 413
    assert health.json() == {"status": "ok", "activeCalls": 0}
