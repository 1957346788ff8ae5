"""``/readyz`` and the webhook's answer while draining or full, in process."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from support import twilio_stream as tw
from support.server import running_server
from support.twilio_sign import sign_form

from callbridge.errors import ConfigError
from callbridge.server.app import create_app
from callbridge.settings import Settings, load_settings
from callbridge.simulator.dialer import CallOptions, dial
from callbridge.store import Store
from callbridge.store.database import Database

from .conftest import AUTH_TOKEN

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _voice(client: httpx.AsyncClient, base: str) -> ET.Element:
    params = {"CallSid": tw.call_sid(), "From": "+15550001111", "To": "+15550002222"}
    body, sig = sign_form(AUTH_TOKEN, f"{base}/voice", params)
    resp = await client.post("/voice", content=body, headers={**FORM, "X-Twilio-Signature": sig})
    assert resp.status_code == 200
    return ET.fromstring(resp.text)


async def test_draining_turns_readyz_503_and_refuses_politely(
    make_settings: Callable[..., Settings],
    client_for: Callable[[str], httpx.AsyncClient],
) -> None:
    app = create_app(make_settings())
    async with running_server(app) as base:
        client = client_for(base)
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert (await _voice(client, base)).find("./Connect/Stream") is not None
        app.state.edge.drain.begin("test")
        resp = await client.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["checks"]["notDraining"] is False
        refused = await _voice(client, base)
        assert [v.tag for v in refused] == ["Say", "Hangup"]
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
        metrics = (await client.get("/metrics")).text
        assert "callbridge_draining 1.0" in metrics
        assert "callbridge_overflow_calls_total 1.0" in metrics


async def test_draining_redirects_to_the_overflow_url(
    make_settings: Callable[..., Settings],
    client_for: Callable[[str], httpx.AsyncClient],
) -> None:
    app = create_app(make_settings(overflow_url="https://overflow.example.com/voice"))
    async with running_server(app) as base:
        client = client_for(base)
        app.state.edge.drain.begin("test")
        twiml = await _voice(client, base)
        (redirect,) = list(twiml)
        assert redirect.tag == "Redirect" and redirect.get("method") == "POST"
        assert redirect.text == "https://overflow.example.com/voice"


async def test_full_instance_is_not_ready(
    make_settings: Callable[..., Settings],
    client_for: Callable[[str], httpx.AsyncClient],
) -> None:
    app = create_app(make_settings(max_calls=1))
    async with running_server(app) as base:
        client = client_for(base)
        app.state.edge.stats.active_calls = 1
        resp = await client.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["checks"] == {
            "notDraining": True,
            "belowCallLimit": False,
            "store": True,
            "providers": True,
        }


async def test_a_stopped_store_writer_is_not_ready(
    make_settings: Callable[..., Settings],
    client_for: Callable[[str], httpx.AsyncClient],
    tmp_path: Path,
) -> None:
    store = Store(Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"), recordings_dir=tmp_path)
    app = create_app(make_settings(), store=store)
    async with running_server(app) as base:
        client = client_for(base)
        assert (await client.get("/readyz")).status_code == 200
        await store.writer.close()
        resp = await client.get("/readyz")
        assert resp.status_code == 503 and resp.json()["checks"]["store"] is False


def test_postgres_refuses_a_per_instance_stream_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLBRIDGE_STREAM_SECRET", raising=False)
    base = {"auth_token": AUTH_TOKEN, "data_dir": tmp_path / "data"}
    with pytest.raises(ConfigError, match="CALLBRIDGE_STREAM_SECRET"):
        load_settings(**base, database_url="postgresql://db.internal/callbridge")
    assert not (tmp_path / "data" / "stream_secret").exists()
    shared = load_settings(
        **base, database_url="postgresql://db.internal/callbridge", stream_secret="k" * 32
    )
    assert shared.shared_store
    alone = load_settings(**base)  # SQLite: one instance, its own generated secret
    assert not alone.shared_store and alone.stream_secret is not None


async def test_a_redirected_call_connects_on_the_instance_with_room(
    make_settings: Callable[..., Settings],
    client_for: Callable[[str], httpx.AsyncClient],
) -> None:
    """Twilio (the simulator) follows the draining instance's <Redirect> to another."""
    ready = create_app(make_settings())
    async with running_server(ready) as ready_base:
        draining = create_app(make_settings(overflow_url=f"{ready_base}/voice"))
        async with running_server(draining) as draining_base:
            draining.state.edge.drain.begin("test")
            plan = await dial(CallOptions(draining_base, AUTH_TOKEN))
    assert plan.stream_url is not None
    assert plan.stream_url.startswith(ready_base.replace("http://", "ws://"))
    assert draining.state.edge.stats.overflow_total == 1
    assert ready.state.edge.stats.overflow_total == 0
