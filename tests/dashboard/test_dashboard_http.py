"""The dashboard over plain HTTP (no browser): off without a token, the login form's
own CSRF nonce, Secure cookies behind https, headers, and Transfer through the API's
code path to a fake of Twilio's REST API."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from support.server import running_server
from support.twilio_api import fake_twilio_api

from callbridge.server.app import create_app
from callbridge.server.call_log import CallLog
from callbridge.settings import load_settings
from callbridge.store import Store
from callbridge.store.repository import get_call

AUTH_TOKEN = "h" * 32
API_TOKEN = "dash-http-" + "z" * 24
ACCOUNT_SID = "AC" + "3" * 32
SID = "CA" + "4" * 32


@asynccontextmanager
async def served(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[str, Store]]:
    values: dict[str, Any] = {
        "auth_token": AUTH_TOKEN,
        "account_sid": ACCOUNT_SID,
        "api_token": API_TOKEN,
        "stream_secret": "t" * 32,
        "data_dir": tmp_path,
    }
    values.update(overrides)
    settings = load_settings(**values)
    store = Store.from_settings(settings)
    call_log = CallLog(store.writer)
    app = create_app(settings, store=store, call_log=call_log)
    async with running_server(app) as base_url:
        yield base_url, store


async def log_in(client: httpx.AsyncClient, origin: str) -> str:
    """Logs ``client`` in; returns the session's CSRF token as the pages carry it."""
    form = await client.get("/dashboard/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    answer = await client.post(
        "/dashboard/login",
        data={"nonce": nonce.group(1), "token": API_TOKEN},
        headers={"Origin": origin},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/live"
    page = await client.get("/dashboard/live")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert csrf
    return csrf.group(1)


async def test_off_without_a_token(tmp_path: Path) -> None:
    async with served(tmp_path, api_token=None) as (url, _), httpx.AsyncClient(base_url=url) as c:
        for path in ("/dashboard/login", "/dashboard/live", "/dashboard/calls"):
            answer = await c.get(path)
            assert answer.status_code == 503 and "CALLBRIDGE_API_TOKEN" in answer.text
        assert (await c.post("/dashboard/login", data={"token": ""})).status_code == 503
        assert (await c.get("/dashboard/live/events")).status_code == 503


async def test_the_login_form_needs_its_nonce_and_this_site(tmp_path: Path) -> None:
    async with served(tmp_path) as (url, _), httpx.AsyncClient(base_url=url) as c:
        no_nonce = await c.post("/dashboard/login", data={"token": API_TOKEN})
        assert no_nonce.status_code == 403 and "cb_session" not in no_nonce.headers.get(
            "set-cookie", ""
        )
        form = await c.get("/dashboard/login")
        assert form.headers["content-security-policy"].startswith("default-src 'self'")
        assert form.headers["x-content-type-options"] == "nosniff"
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
        assert nonce
        cross = await c.post(
            "/dashboard/login",
            data={"nonce": nonce.group(1), "token": API_TOKEN},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        nonce = re.search(r'name="nonce" value="([^"]+)"', cross.text)  # a fresh form
        assert nonce
        wrong = await c.post(
            "/dashboard/login",
            data={"nonce": nonce.group(1), "token": "nope"},
            headers={"Origin": url},
        )
        assert wrong.status_code == 401 and "cb_session" not in wrong.headers.get("set-cookie", "")


async def test_cookies_are_secure_behind_https(tmp_path: Path) -> None:
    public = "https://calls.example.com"
    async with (
        served(tmp_path, public_url=public) as (url, _),
        httpx.AsyncClient(base_url=url) as c,
    ):
        form = await c.get("/dashboard/login")
        assert "Secure" in form.headers["set-cookie"]
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
        assert nonce
        answer = await c.post(
            "/dashboard/login",
            data={"nonce": nonce.group(1), "token": API_TOKEN},
            headers={"Origin": public, "Cookie": f"cb_login={nonce.group(1)}"},
        )
        assert answer.status_code == 303
        cookie = answer.headers.get_list("set-cookie")[-1]
        assert cookie.startswith("cb_session=")
        for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/dashboard"):
            assert flag in cookie, flag


async def test_transfer_goes_through_the_api_code_path(tmp_path: Path) -> None:
    with fake_twilio_api(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        twilio.add_call(SID)
        async with (
            served(tmp_path, twilio_api_base_url=twilio.base_url) as (url, store),
            httpx.AsyncClient(base_url=url) as c,
        ):
            csrf = await log_in(c, url)
            post = c.post
            bad = await post(
                f"/dashboard/calls/{SID}/transfer",
                data={"csrf": csrf, "to": "555"},
                headers={"Origin": url, "Accept": "application/json"},
            )
            assert bad.status_code == 422 and not twilio.requests
            ok = await post(
                f"/dashboard/calls/{SID}/transfer",
                data={"csrf": csrf, "to": "+15550100777"},
                headers={"Origin": url},
            )
            assert ok.status_code == 303 and ok.headers["location"] == "/dashboard/live"
            live = await c.get("/dashboard/live")  # the outcome, once
            assert "transferred to +15550100777" in live.text
            assert "transferred to" not in (await c.get("/dashboard/live")).text
            forged = await c.get("/dashboard/live?notice=Call+%2B1900+now")
            assert "Call +1900 now" not in forged.text  # a link cannot put words there
            (request,) = twilio.requests
            twiml = request.form["Twiml"][0]
            assert "<Dial" in twiml and "+15550100777" in twiml
            for _ in range(200):
                detail = await get_call(store.database, SID)
                if detail and any(e.kind == "api_transfer" for e in detail.events):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("no api_transfer event recorded")
            gone = await post(
                f"/dashboard/calls/{'CA' + '5' * 32}/hangup",
                data={"csrf": csrf},
                headers={"Origin": url, "Accept": "application/json"},
            )
            assert gone.status_code == 200 and gone.json() == {
                "ok": True,
                "detail": "hang-up: already over",
            }
            assert (await c.get(f"/dashboard/calls/{SID}/recording")).status_code == 404
