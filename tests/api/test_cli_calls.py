"""``callbridge calls``, ``calls show``, ``call`` and ``doctor`` (reading the record the
server writes; Twilio REST against a local fake)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.twilio_api import fake_twilio_api

from callbridge.cli_calls import add_commands, latency_bar
from callbridge.settings import load_settings
from callbridge.store.database import Database
from callbridge.store.ops import CallEnded, CallSeen, EventHappened, TurnEnded, apply
from callbridge.store.repository import get_call

from .conftest import ACCOUNT_SID, API_TOKEN, AUTH_TOKEN, ENV_VARS

T0 = datetime(2025, 6, 10, 9, 0, tzinfo=UTC)
SID = "CA" + "7" * 32
LOCAL_ASSISTANT = """
name: doctor-test
recordingEnabled: true
vad: {provider: webrtc}
transcriber: {provider: none}
model: {provider: scripted, intents: [{name: one, dtmf: "1", reply: One.}]}
voice: {provider: espeak}
"""


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    monkeypatch.setenv("CALLBRIDGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="callbridge")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def seed() -> None:
    async def go() -> None:
        db = Database.from_settings(load_settings())
        await db.migrate()
        async with db.sessions() as session, session.begin():
            for op in (
                CallSeen(sid=SID, at=T0, from_number="+15550001111", to_number="+15550002222"),
                TurnEnded(
                    sid=SID,
                    seq=1,
                    role="user",
                    kind="",
                    text="I want to check my bill",
                    heard_text=None,
                    interrupted=False,
                    started_at=T0 + timedelta(seconds=2),
                    ended_at=T0 + timedelta(seconds=4),
                    latency_ms={},
                ),
                TurnEnded(
                    sid=SID,
                    seq=2,
                    role="assistant",
                    kind="answer",
                    text="Your bill is due on the first of the month.",
                    heard_text="Your bill is due",
                    interrupted=True,
                    started_at=T0 + timedelta(seconds=4),
                    ended_at=T0 + timedelta(seconds=6),
                    latency_ms={"stt": 100.0, "first_audio": 250.0, "first_frame": 252.0},
                ),
                EventHappened(sid=SID, at=T0 + timedelta(seconds=5), kind="barge_in"),
                CallEnded(sid=SID, at=T0 + timedelta(seconds=30), outcome="goodbye"),
            ):
                await apply(session, op)
        await db.dispose()

    asyncio.run(go())


def test_calls_lists_and_shows(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("calls") == 1  # no database yet: says so instead of creating one
    assert "callbridge serve" in capsys.readouterr().out
    seed()
    assert run("calls") == 0
    table = capsys.readouterr().out
    assert SID in table and "+15550001111" in table and "goodbye" in table and "30s" in table
    assert run("calls", "--status", "ringing") == 0
    assert "No calls" in capsys.readouterr().out
    assert run("calls", "show", SID) == 0
    shown = capsys.readouterr().out
    assert "caller  I want to check my bill" in shown
    assert "Your bill is due on the first of the month.  [interrupted]" in shown
    assert "252 ms" in shown and "barge_in" in shown
    assert run("calls", "show", "CA" + "0" * 32) == 1


def test_latency_bar_has_one_segment_per_stage() -> None:
    bar = latency_bar({"stt": 100.0, "first_audio": 250.0, "first_frame": 300.0})
    assert bar is not None
    assert bar.plain.startswith("█" * 12 + "  300 ms")
    styles = [(span.end - span.start, span.style) for span in bar.spans][:3]
    assert styles == [(4, "cyan"), (6, "magenta"), (2, "green")]
    huge = latency_bar({"first_frame": 60_000.0})
    assert huge is not None and huge.plain.count("█") == 48
    assert latency_bar({}) is None


def test_call_places_it_and_records_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_twilio_api(ACCOUNT_SID, AUTH_TOKEN) as fake:
        monkeypatch.setenv("TWILIO_API_BASE_URL", fake.base_url)
        monkeypatch.setenv("PUBLIC_URL", "https://calls.example.com")
        monkeypatch.setenv("TWILIO_PHONE_NUMBER", "+15550001111")
        assert run("call", "+15557654321") == 0
        (form,) = fake.created
    assert form["Url"] == ["https://calls.example.com/voice"]
    out = capsys.readouterr().out
    sid = out.split(": ", 1)[1].split()[0]

    async def read() -> tuple[str, str]:
        db = Database.from_settings(load_settings())
        detail = await get_call(db, sid)
        await db.dispose()
        assert detail is not None
        return detail.call.direction, detail.call.to_number

    assert asyncio.run(read()) == ("outbound-api", "+15557654321")


def test_doctor_all_ok(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (env / "assistant.yaml").write_text(LOCAL_ASSISTANT, encoding="utf-8")
    monkeypatch.setenv("CALLBRIDGE_ASSISTANT", str(env / "assistant.yaml"))
    monkeypatch.setenv("PUBLIC_URL", "https://calls.example.com")
    monkeypatch.setenv("CALLBRIDGE_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", "+15550001111")
    seed()  # migrated
    assert run("doctor") == 0
    lines = capsys.readouterr().out.splitlines()
    names = [" ".join(line.split()[1:3]) for line in lines]
    assert all(line.startswith("ok") for line in lines), lines
    for name in ("settings", "twilio", "public url", "api token", "database", "assistant"):
        assert any(n.startswith(name) for n in names), name
    for name in ("recordings", "providers", "vad model", "tts voice"):
        assert any(n.startswith(name) for n in names), name


def test_doctor_says_what_to_fix(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (env / "assistant.yaml").write_text(
        LOCAL_ASSISTANT.replace("{provider: espeak}", "{provider: 11labs, voiceId: x}"),
        encoding="utf-8",
    )
    monkeypatch.setenv("CALLBRIDGE_ASSISTANT", str(env / "assistant.yaml"))
    monkeypatch.setenv("PUBLIC_URL", "http://calls.example.com")
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    assert run("doctor") == 1
    out = capsys.readouterr().out
    assert "fail public url" in " ".join(out.split())
    assert "wss://" in out
    assert "fail database" in " ".join(out.split()) and "callbridge serve" in out
    assert "warn api token" in " ".join(out.split())
    assert "fail providers" in " ".join(out.split()) and "ELEVENLABS_API_KEY" in out
