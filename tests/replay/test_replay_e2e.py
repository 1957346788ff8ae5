"""`callbridge replay` end to end: a simulated call is recorded by a real server (uvicorn on
127.0.0.1, the engine with `provider: fake`, the store in SQLite, `recordingEnabled`),
then its caller leg and key press are replayed against an assistant served in-process.

Tolerance: against the same assistant every caller turn's latency (caller's last audible
frame → first audible bot sample, measured from audio on both sides) must be within
150 ms of the original's (`ReplaySettings.tolerance_ms`); measured, it is within 4 ms
here and within 16 ms on the seed stack (README, "Replaying a call"). The slack is for
the 20 ms frame grid on each side, the two vantage points (the server's recording for the
original, the simulated caller for the replay) and a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from support.server import running_server

from callbridge.cli import main
from callbridge.server.app import create_app
from callbridge.server.call_log import CallLog
from callbridge.settings import load_settings
from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.replay import RemoteServer, ReplaySettings, replay_call
from callbridge.simulator.replay_source import StoredCall, load_stored_call
from callbridge.simulator.replay_track import caller_turns
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import parse_scenario
from callbridge.store import Store
from callbridge.voice_agent import build_runner

AUTH_TOKEN = "replay-auth-token-0123456789abcd"
REPLY = "Your balance is forty two dollars."
SCENARIO = """
name: recorded
steps:
  - expect_bot_speech: 3000
  - wait_for_silence: {ms: 600, timeout_ms: 10000}
  - say: I would like to check my bill please
  - wait_for_bot_speech: 5000
  - wait_for_silence: {ms: 800, timeout_ms: 10000}
  - dtmf: "1"
  - wait_for_bot_speech: 5000
  - wait_for_silence: {ms: 800, timeout_ms: 10000}
  - hangup
"""


def assistant(tmp_path: Path, name: str, *, endpointing_ms: int = 500, reply: str = REPLY,
              recording: bool = False) -> Path:
    config: dict[str, Any] = {
        "name": name,
        "firstMessage": "Hi there.",
        "recordingEnabled": recording,
        "vad": {"provider": "fake"},
        "transcriber": {"provider": "fake", "text": "I would like to check my bill"},
        "model": {"provider": "fake", "reply": reply, "firstTokenMs": 80, "chunks": 2},
        "voice": {"provider": "fake", "firstAudioMs": 60, "msPerWord": 60},
        # The full silence ends every turn, so endpointingMs is what a caller waits for.
        "turnTaking": {"endpointingMs": endpointing_ms, "endOfTurn": "off"},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Recorded:
    stored: StoredCall
    assistant: Path
    tmp_path: Path


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replay")


@asynccontextmanager
async def serving(path: Path, data_dir: Path, *, recordings: bool = True,
                  api_token: str | None = None, env: dict[str, str] | None = None
                  ) -> AsyncIterator[tuple[str, Store]]:
    """``path`` served as `callbridge serve` serves it, its record in ``data_dir``."""
    settings = load_settings(auth_token=AUTH_TOKEN, stream_secret="r" * 32, data_dir=data_dir,
                             account_sid="", api_token=api_token)
    store = Store.from_settings(settings)
    call_log = CallLog(store.writer, assistant=path.stem,
                       recordings_dir=settings.recordings_path if recordings else None)
    runner = build_runner(path, env or {}, on_turn=call_log.on_turn, on_end=call_log.on_end)
    app = create_app(settings, call_log.wrap(runner), store=store, call_log=call_log)
    async with running_server(app) as base_url:
        yield base_url, store


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recorded(tmp_module: Path) -> AsyncIterator[Recorded]:
    """One call through the server as `callbridge serve` records it, read back."""
    path = assistant(tmp_module, "original", recording=True)
    scenario = parse_scenario(SCENARIO)
    voices = await asyncio.to_thread(prepare_voices, scenario, tmp_module)
    async with serving(path, tmp_module / "data") as (base_url, store):
        options = CallOptions(base_url, AUTH_TOKEN)
        report = await run_scenario(scenario, options, voices)
        assert report.ok, report.failures
        stored = None
        for _ in range(200):  # the writer commits the call's end a moment after hang-up
            stored = await load_stored_call(store.database, options.call_sid)
            if stored.side.duration_s is not None and len(stored.side.turns) >= 4:
                break
            await asyncio.sleep(0.025)
        assert stored is not None
    yield Recorded(stored, path, tmp_module)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_recording_holds_the_callers_leg_and_the_key_press(recorded: Recorded) -> None:
    stored = recorded.stored
    turns = caller_turns(stored.track)
    # The one utterance the caller said is on the left channel, and was answered.
    assert len(turns) == 1 and turns[0].latency_ms is not None
    assert [digit for _, digit in stored.presses] == ["1"]
    press_ms = stored.presses[0][0]
    assert press_ms > turns[0].end_s * 1000 + 800  # after the first answer ended
    roles = [(t.role, t.text) for t in stored.side.turns]
    assert roles[:3] == [("assistant", "Hi there."),
                         ("user", "I would like to check my bill"), ("assistant", REPLY)]
    assert roles[3][1].endswith("(pressed 1)")


@pytest.mark.asyncio(loop_scope="module")
async def test_replay_against_the_same_assistant_has_the_same_turns(recorded: Recorded) -> None:
    report = await replay_call(recorded.stored, recorded.assistant)
    assert report.same_turns, report.differences
    assert report.latency_within_tolerance, [r.as_dict() for r in report.caller_rows]
    assert report.same, report.differences
    # Both answered turns (the words and the key press) were measured on both sides.
    assert [t.label for t in report.simulator.turns] == ["caller 1", "1"]
    assert all(t.latency_ms is not None for t in report.simulator.turns)
    assert report.as_dict()["same"] is True


@pytest.mark.asyncio(loop_scope="module")
async def test_a_longer_endpointing_shows_as_slower_caller_turns(recorded: Recorded) -> None:
    slower = assistant(recorded.tmp_path, "slower", endpointing_ms=800)
    report = await replay_call(recorded.stored, slower, settings=ReplaySettings())
    assert report.same_turns, report.differences  # the same words, later
    words, key = report.caller_rows
    assert key.original is not None and key.original.dtmf == "1"
    row = words
    assert row.delta_ms is not None and 300 - 100 <= row.delta_ms <= 300 + 100
    assert not report.same
    assert any(line.startswith("caller turn 1: latency") for line in report.differences)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_different_reply_shows_in_the_turns(recorded: Recorded) -> None:
    other = assistant(recorded.tmp_path, "other", reply="Sorry, billing is closed today.")
    report = await replay_call(recorded.stored, other)
    assert not report.same_turns
    changed = [row for row in report.turn_rows if not row.same]
    assert changed and all(
        (row.replay is not None and row.replay.text == "Sorry, billing is closed today.")
        for row in changed
    )
    assert any("billing is closed" in line for line in report.differences)
    data = report.as_dict()
    assert data["same_turns"] is False and data["replay"]["assistant"] == "other"


@pytest.mark.asyncio(loop_scope="module")
async def test_speed_shortens_the_dead_air_and_keeps_the_turns(recorded: Recorded) -> None:
    report = await replay_call(recorded.stored, recorded.assistant,
                               settings=ReplaySettings(speed=4.0))
    assert report.removed_ms > 500
    assert report.same_turns, report.differences
    assert report.simulator.duration_s * 1000 < (recorded.stored.track.duration_ms
                                                 - report.removed_ms + 500)


def _from_the_record(recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads the recorded call where `callbridge serve` would keep it."""
    monkeypatch.chdir(recorded.tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("CALLBRIDGE_DATA_DIR", str(recorded.tmp_path / "data"))


def test_the_command_prints_json_for_ci(
    recorded: Recorded, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _from_the_record(recorded, monkeypatch)
    sid = recorded.stored.side.sid
    code = main(["replay", sid, "--assistant", str(recorded.assistant), "--json", "--check"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0, data["differences"]
    assert data["same"] is True and data["original"]["sid"] == sid
    assert [row["same"] for row in data["turns"]] == [True] * len(data["turns"])
    assert [row["original"]["dtmf"] for row in data["caller_turns"]] == [None, "1"]


def test_the_command_shows_the_difference_and_check_fails(
    recorded: Recorded, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _from_the_record(recorded, monkeypatch)
    other = assistant(recorded.tmp_path, "closed", reply="Billing is closed.")
    code = main(["replay", recorded.stored.side.sid, "--assistant", str(other), "--check"])
    out = capsys.readouterr().out
    assert code == 1
    assert "Turns" in out and "Billing is closed." in out and REPLY in out
    assert "DIFF turn" in out


@pytest.mark.asyncio(loop_scope="module")
async def test_replay_against_a_running_server_reads_its_record_through_the_api(
    recorded: Recorded,
) -> None:
    api_token = "replay-api-token-0123456789abcdef"
    other = assistant(recorded.tmp_path, "remote", reply="Billing is closed.")
    async with serving(other, recorded.tmp_path / "remote", recordings=False,
                       api_token=api_token) as (base_url, _):
        report = await replay_call(
            recorded.stored, None,
            remote=RemoteServer(base_url, AUTH_TOKEN, api_token=api_token),
        )
        unread = await replay_call(recorded.stored, None,
                                   remote=RemoteServer(base_url, AUTH_TOKEN))
    assert report.replay.assistant == "remote" and report.replay.events is not None
    assert [t.text for t in report.replay.turns if t.role == "assistant"][1:] == [
        "Billing is closed."] * 2
    assert not report.same_turns
    # Without the API token the audio is still measured; the turns are not read.
    assert unread.replay.events is None and unread.replay.turns == []
    assert len(unread.replay.caller_turns) == 2
    assert all(t.latency_ms is not None for t in unread.replay.caller_turns)
