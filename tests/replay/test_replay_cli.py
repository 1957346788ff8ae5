"""`callbridge replay` refuses what it cannot replay with one line that says why (exit 2).

The call record is a real SQLite file in the test's data dir, written with the store's
own ops, read by the command exactly as `callbridge calls` reads it.
"""

from __future__ import annotations

import asyncio
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callbridge.cli import main
from callbridge.settings import Settings
from callbridge.store.database import Database, database_url
from callbridge.store.ops import CallEnded, CallSeen, RecordingStarted, StoreOp, apply

GOOD_ASSISTANT = """
name: fake
vad: {provider: fake}
transcriber: {provider: fake}
model: {provider: fake}
voice: {provider: fake}
"""


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir with a migrated call record; the command runs from ``tmp_path``."""
    monkeypatch.chdir(tmp_path)  # no .env of the developer's is read
    for name in ("DATABASE_URL", "CALLBRIDGE_RECORDINGS_DIR", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALLBRIDGE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "good.yaml").write_text(GOOD_ASSISTANT)
    return tmp_path


def _write(tmp_path: Path, *ops: StoreOp) -> None:
    async def go() -> None:
        settings = Settings()  # CALLBRIDGE_DATA_DIR from the fixture
        database = Database(database_url(settings))
        try:
            await database.migrate()
            async with database.sessions() as session, session.begin():
                for op in ops:
                    await apply(session, op)
        finally:
            await database.dispose()

    asyncio.run(go())


NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


def _call(sid: str) -> tuple[CallSeen, CallEnded]:
    return CallSeen(sid=sid, at=NOW, status="completed"), CallEnded(sid=sid, at=NOW,
                                                                      outcome="caller_hung_up")


def _replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["replay", *args])
    return code, capsys.readouterr().err


def test_without_any_call_record(record: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _replay(capsys, "CA123", "--assistant", "good.yaml")
    assert code == 2 and "no call record at" in err


def test_an_unknown_call_sid(record: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(record, *_call("CAknown"))
    code, err = _replay(capsys, "CAunknown", "--assistant", "good.yaml")
    assert code == 2
    assert "no call CAunknown in the record" in err and "callbridge calls" in err


def test_a_call_that_was_not_recorded(record: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(record, *_call("CAplain"))
    code, err = _replay(capsys, "CAplain", "--assistant", "good.yaml")
    assert code == 2
    assert "has no recording" in err and "recordingEnabled: true" in err


def test_a_recording_whose_file_is_gone(record: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gone = record / "data" / "recordings" / "CAgone.wav"
    _write(record, *_call("CAgone"),
           RecordingStarted(sid="CAgone", at=NOW, path=str(gone), rate_hz=8000, channels=2))
    code, err = _replay(capsys, "CAgone", "--assistant", "good.yaml")
    assert code == 2 and "is gone" in err and str(gone) in err


def test_a_recording_that_is_not_callbridges_stereo(
    record: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mono = record / "mono.wav"
    with wave.open(str(mono), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 160)
    _write(record, *_call("CAmono"),
           RecordingStarted(sid="CAmono", at=NOW, path=str(mono), rate_hz=16000, channels=1))
    code, err = _replay(capsys, "CAmono", "--assistant", "good.yaml")
    assert code == 2 and "expected callbridge's stereo 16-bit 8 kHz" in err


def test_a_bad_assistant_file_is_named_before_anything_runs(
    record: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (record / "bad.yaml").write_text(GOOD_ASSISTANT + "turnTaking: {endpointingMs: -5}\n")
    code, err = _replay(capsys, "CA123", "--assistant", "bad.yaml")
    assert code == 2
    assert "configuration error" in err and "bad.yaml" in err and "endpointingMs" in err
    code, err = _replay(capsys, "CA123", "--assistant", "missing.yaml")
    assert code == 2 and "cannot read assistant file missing.yaml" in err


def test_arguments_that_cannot_work(record: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _replay(capsys, "CA123")
    assert code == 2 and "give --assistant FILE" in err
    code, err = _replay(capsys, "CA123", "--assistant", "good.yaml", "--speed", "0.5")
    assert code == 2 and "--speed" in err
    code, err = _replay(capsys, "CA123", "--assistant", "good.yaml", "--url", "http://x")
    assert code == 2 and "drop --assistant" in err
