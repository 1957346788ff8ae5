"""``/api``: bearer auth, the call record's pages, recordings, and call control through
the twilio SDK against local fakes of Twilio's REST API."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import websockets
from support import twilio_stream as tw
from support.calls import answer_call
from support.server import ws_url
from support.twilio_api import fake_twilio_api
from support.twilio_sign import sign_form

from callbridge.audio.wav import IncrementalWavWriter
from callbridge.server.loopback import loopback_runner
from callbridge.settings import Settings
from callbridge.store.database import Database
from callbridge.store.ops import (
    CallSeen,
    EventHappened,
    RecordingStarted,
    StoreOp,
    TurnEnded,
    apply,
)
from callbridge.store.repository import get_call

from .conftest import ACCOUNT_SID, API_TOKEN, AUTH_TOKEN

T0 = datetime(2025, 6, 10, 9, 0, tzinfo=UTC)
Serve = Callable[..., Any]


async def write(db: Database, *ops: StoreOp) -> None:
    async with db.sessions() as session, session.begin():
        for op in ops:
            await apply(session, op)


def sid_of(i: int) -> str:
    return f"CA{i:032x}"


async def test_auth_401_without_403_wrong_503_unset(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    async with serve(make_settings()) as served:
        anonymous = httpx.AsyncClient(base_url=served.base_url, trust_env=False)
        async with anonymous:
            missing = await anonymous.get("/api/calls")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = await anonymous.get(
                "/api/calls", headers={"Authorization": "Bearer " + "x" * 32}
            )
            assert wrong.status_code == 403
            basic = await anonymous.get("/api/calls", headers={"Authorization": "Basic eDp5"})
            assert basic.status_code == 401
            for method, path in (
                ("POST", "/api/calls"),
                ("POST", f"/api/calls/{sid_of(1)}/hangup"),
            ):
                assert (await anonymous.request(method, path)).status_code == 401
            assert (await anonymous.get("/healthz")).status_code == 200  # outside the API
        assert (await served.client.get("/api/calls")).status_code == 200
    async with serve(make_settings(api_token=None)) as served:
        off = await served.client.get("/api/calls")
        assert off.status_code == 503 and "CALLBRIDGE_API_TOKEN" in off.text


async def test_calls_are_paged_and_filtered(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    async with serve(make_settings()) as served:
        await write(
            served.database,
            *(
                CallSeen(
                    sid=sid_of(i),
                    at=T0 + timedelta(minutes=i),
                    from_number=f"+1555000000{i % 2}",
                    to_number="+15559990000",
                    status="completed" if i < 4 else "in-progress",
                )
                for i in range(7)
            ),
        )
        seen: list[str] = []
        offset: int | None = 0
        while offset is not None:
            page = await served.client.get("/api/calls", params={"limit": 3, "offset": offset})
            body = page.json()
            assert body["total"] == 7 and body["limit"] == 3
            seen += [c["sid"] for c in body["calls"]]
            offset = body["nextOffset"]
        assert seen == [sid_of(i) for i in reversed(range(7))]
        first = (await served.client.get("/api/calls", params={"limit": 1})).json()["calls"][0]
        assert first["from"] == "+15550000000" and first["status"] == "in-progress"
        assert first["startedAt"].startswith("2025-06-10T09:06:00")
        filtered = await served.client.get(
            "/api/calls",
            params={"status": "completed", "from": "+15550000001", "since": "2025-06-10T09:02"},
        )
        assert [c["sid"] for c in filtered.json()["calls"]] == [sid_of(3)]
        bad = await served.client.get("/api/calls", params={"limit": 0})
        assert bad.status_code == 422


async def test_call_detail_and_recording(
    make_settings: Callable[..., Settings], serve: Serve, tmp_path: Path
) -> None:
    """A real call through the socket (loopback runner, recorded), then read back."""
    settings = make_settings()
    async with serve(settings, runner=loopback_runner, recording=True) as served:
        answered = await answer_call(served.client, served.base_url, AUTH_TOKEN)
        sid, stream = answered.call_sid, tw.stream_sid()
        async with websockets.connect(ws_url(served.base_url), compression=None) as ws:
            await ws.send(tw.connected())
            await ws.send(tw.start(stream, sid, answered.params))
            for i in range(25):
                frame = tw.media(stream, b"\x10" * 160, seq=i + 2, chunk=i + 1, timestamp_ms=20 * i)
                await ws.send(frame)
            echoed = 0
            while echoed < 25:
                message = await ws.recv()
                echoed += '"media"' in message
            await ws.send(tw.stop(stream, sid, seq=30))
        await _until_ended(served.database, sid)
        await write(served.database, EventHappened(sid=sid, at=T0, kind="note", data={"a": 1}))
        await write(
            served.database,
            TurnEnded(
                sid=sid,
                seq=1,
                role="assistant",
                kind="greeting",
                text="Hi",
                heard_text="Hi",
                interrupted=False,
                started_at=T0,
                ended_at=T0 + timedelta(seconds=1),
                latency_ms={"first_audio": 60.0},
            ),
        )
        detail = (await served.client.get(f"/api/calls/{sid}")).json()
        assert detail["call"]["outcome"] == "caller_hung_up"
        assert detail["call"]["status"] == "completed" and detail["call"]["turns"] == 1
        assert detail["turns"][0]["latencyMs"] == {"first_audio": 60.0}
        kinds = [e["kind"] for e in detail["events"]]
        assert kinds[0] == "note" and "stream_started" in kinds
        recording = detail["recording"]
        assert recording["url"] == f"/api/calls/{sid}/recording" and recording["channels"] == 2
        wav = await served.client.get(recording["url"])
        assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
        with wave.open(BytesIO(wav.content)) as w:
            assert (w.getnchannels(), w.getframerate()) == (2, 8000)
            assert w.getnframes() >= 24 * 160
        assert (await served.client.get(f"/api/calls/{sid_of(9)}")).status_code == 404
        assert (await served.client.get(f"/api/calls/{sid_of(9)}/recording")).status_code == 404


async def test_hangup_and_transfer_through_the_sdk(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    with fake_twilio_api(ACCOUNT_SID, AUTH_TOKEN) as fake:
        live = sid_of(1)
        fake.add_call(live)
        async with serve(make_settings(twilio_api_base_url=fake.base_url)) as served:
            ok = await served.client.post(f"/api/calls/{live}/hangup")
            assert ok.status_code == 200
            assert ok.json() == {"sid": live, "ok": True, "detail": "ended"}
            assert fake.calls[live] == "completed"
            gone = await served.client.post(f"/api/calls/{sid_of(2)}/hangup")
            assert gone.status_code == 200  # 20404: already over is what we wanted
            assert gone.json()["detail"] == "already over"

            fake.add_call(sid_of(3))
            moved = await served.client.post(
                f"/api/calls/{sid_of(3)}/transfer", json={"to": "+15555550100"}
            )
            assert moved.status_code == 200
            twiml = fake.requests[-1].form["Twiml"][0]
            assert "<Dial>+15555550100</Dial>" in twiml
            not_live = await served.client.post(
                f"/api/calls/{sid_of(4)}/transfer", json={"to": "+15555550100"}
            )
            assert not_live.status_code == 404
            bad = await served.client.post(f"/api/calls/{live}/transfer", json={"to": "0800"})
            assert bad.status_code == 422
            assert (await served.client.post("/api/calls/nonsense/hangup")).status_code == 422

            fake.fail_with = (500, 20500)
            failed = await served.client.post(f"/api/calls/{live}/hangup")
            assert failed.status_code == 502 and "20500" in failed.json()["detail"]
            fake.fail_with = None

            await served.store.writer.flush()
            detail = await get_call(served.database, live)
            assert detail is not None
            assert [(e.kind, e.data) for e in detail.events] == [
                ("api_hangup", {"result": "ended"})
            ]
            assert all(r.authorization.startswith("Basic ") for r in fake.requests)


async def test_outbound_call_points_twilio_at_our_voice_webhook(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    with fake_twilio_api(ACCOUNT_SID, AUTH_TOKEN) as fake:
        settings = make_settings(
            twilio_api_base_url=fake.base_url,
            public_url="https://calls.example.com",
            from_number="+15550001111",
        )
        async with serve(settings) as served:
            placed = await served.client.post("/api/calls", json={"to": "+15557654321"})
            assert placed.status_code == 201, placed.text
            sid = placed.json()["sid"]
            (form,) = fake.created
            assert form["To"] == ["+15557654321"] and form["From"] == ["+15550001111"]
            assert form["Url"] == ["https://calls.example.com/voice"]
            assert form["StatusCallback"] == ["https://calls.example.com/status"]
            assert set(form["StatusCallbackEvent"]) == {
                "initiated",
                "ringing",
                "answered",
                "completed",
            }
            other = await served.client.post(
                "/api/calls", json={"to": "+15557654321", "from": "+15550002222"}
            )
            assert fake.created[-1]["From"] == ["+15550002222"] and other.status_code == 201
            assert (await served.client.post("/api/calls", json={"to": "12"})).status_code == 422
            await served.store.writer.flush()
            listed = (await served.client.get("/api/calls")).json()["calls"]
            mine = next(c for c in listed if c["sid"] == sid)
            assert (mine["direction"], mine["status"], mine["to"]) == (
                "outbound-api",
                "queued",
                "+15557654321",
            )
    async with serve(make_settings(from_number="+15550001111")) as served:
        no_url = await served.client.post("/api/calls", json={"to": "+15557654321"})
        assert no_url.status_code == 409 and "PUBLIC_URL" in no_url.text
    async with serve(make_settings(public_url="https://calls.example.com")) as served:
        no_from = await served.client.post("/api/calls", json={"to": "+15557654321"})
        assert no_from.status_code == 422 and "TWILIO_PHONE_NUMBER" in no_from.text


async def test_status_callbacks_are_recorded_only_when_signed(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    async with serve(make_settings()) as served:
        sid = sid_of(5)
        params = {
            "CallSid": sid,
            "AccountSid": ACCOUNT_SID,
            "CallStatus": "completed",
            "CallDuration": "42",
            "Direction": "inbound",
            "From": "+15550001111",
            "To": "+15550002222",
            "SequenceNumber": "3",
        }
        body, signature = sign_form(AUTH_TOKEN, f"{served.base_url}/status", params)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        forged = await served.client.post(
            "/status", content=body, headers={**headers, "X-Twilio-Signature": "x" + signature}
        )
        assert forged.status_code == 403
        signed = await served.client.post(
            "/status", content=body, headers={**headers, "X-Twilio-Signature": signature}
        )
        assert signed.status_code == 204
        await served.store.writer.flush()
        detail = await get_call(served.database, sid)
        assert detail is not None
        assert (detail.call.status, detail.call.from_number) == ("completed", "+15550001111")
        ((kind, data),) = [(e.kind, e.data) for e in detail.events]
        assert kind == "status"
        assert data == {
            "status": "completed",
            "durationS": "42",
            "sequence": "3",
            "direction": "inbound",
        }


async def test_metrics_and_openapi_are_published(
    make_settings: Callable[..., Settings], serve: Serve
) -> None:
    async with serve(make_settings()) as served:
        served.metrics.errors.labels("provider").inc()
        text = (await served.client.get("/metrics")).text
        assert "callbridge_active_calls 0.0" in text
        assert 'callbridge_errors_total{kind="provider"} 1.0' in text
        assert "callbridge_turn_latency_seconds_bucket" in text
        schema = (await served.client.get("/api/openapi.json")).json()
        assert set(schema["paths"]) == {
            "/api/calls",
            "/api/calls/{sid}",
            "/api/calls/{sid}/recording",
            "/api/calls/{sid}/hangup",
            "/api/calls/{sid}/transfer",
            "/api/calls/{sid}/say",
        }
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def _until_ended(database: Database, sid: str) -> None:
    for _ in range(200):
        detail = await get_call(database, sid)
        if detail is not None and detail.call.ended_at is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the call never ended in the record")


def test_api_token_is_redacted_from_logs(make_settings: Callable[..., Settings]) -> None:
    assert API_TOKEN in make_settings().secret_values()


async def test_a_recording_still_being_written_downloads_consistently(
    make_settings: Callable[..., Settings], serve: Serve, tmp_path: Path
) -> None:
    path = tmp_path / "live.wav"
    writer = IncrementalWavWriter(path, 8000, channels=2)
    writer.write(b"\x01\x00\x02\x00" * 1000)
    with path.open("ab") as f:
        f.write(b"\x03\x00\x04")  # half a frame: an append whose header patch is pending
    async with serve(make_settings()) as served:
        await write(
            served.database,
            RecordingStarted(sid=sid_of(8), at=T0, path=str(path), rate_hz=8000, channels=2),
        )
        wav = await served.client.get(f"/api/calls/{sid_of(8)}/recording")
        assert wav.status_code == 200
        assert int(wav.headers["content-length"]) == len(wav.content) == 44 + 4000
        with wave.open(BytesIO(wav.content)) as w:
            assert w.getnframes() == 1000
        detail = (await served.client.get(f"/api/calls/{sid_of(8)}")).json()
        assert detail["recording"]["durationMs"] == 125  # from the header: the row has none
    writer.close()
