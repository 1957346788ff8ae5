"""The simulator against the real server running its loopback echo (no engine yet).

The loopback plays the caller back paced at real time, sends a mark each second and
answers a key press with ``clear``: enough to check the whole Twilio side end to end:
signed webhook, TwiML, handshake, start/media/mark/clear/stop, and the playback model.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from callbridge.simulator import voice
from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions, CallRefused, dial
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import parse_scenario

from .conftest import AUTH_TOKEN


async def test_echo_round_trip_is_bit_exact_and_marks_come_back(
    loopback_url: str, hello: voice.Utterance, tmp_path: Path
) -> None:
    options = CallOptions(loopback_url, AUTH_TOKEN)
    plan = await dial(options)
    assert plan.stream_url is not None and plan.stream_url.endswith("/media")
    assert plan.parameters["token"]  # the stream token minted by the webhook
    async with LiveCall(plan, options, record=True) as call:
        await call.say(hello)
        # Until the echo is over (two marks back, then the bot silent): on a busy
        # machine the echo may trail the speech by more than its length.
        assert await call.wait_until(
            lambda: call.marks_echoed_played >= 2 and call.bot_silent_for_s() > 0.6, 15.0
        )
    report = call.report()
    assert report.hangup_by == "caller" and not report.protocol_errors
    assert report.frames_received > 0.8 * report.frames_sent  # everything is echoed
    assert report.marks_received >= 2 and report.marks_echoed_cleared == 0
    # The caller's own speech came back: bot speech started after the caller began.
    (turn,) = report.turns
    assert call.bot_speech_starts and call.bot_speech_starts[0] > turn.onset_s
    # The loopback paces with no lead, so small dry spells (underruns) may happen; the
    # jitter of its 20 ms pace at an idle server is small.
    p50 = report.jitter(50)
    assert p50 is not None and p50 < 20
    # What played back is exactly what was said (μ-law in, μ-law out, nothing lost).
    assert call.recorder is not None
    assert hello.end_index is not None
    assert b"".join(hello.frames[: hello.end_index + 1]) in call.recorder.bot_ulaw()
    # The stereo file: caller left, bot right, the echo after the speech.
    path = tmp_path / "call.wav"
    call.recorder.write(path)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    onset_left = int(np.argmax(np.abs(stereo[:, 0]) > 1000))
    onset_right = int(np.argmax(np.abs(stereo[:, 1]) > 1000))
    assert 0 < onset_right - onset_left < 8000  # echoed within a second at an idle server


async def test_key_press_clears_playback_and_cleared_marks_echo(
    loopback_url: str, hello: voice.Utterance
) -> None:
    options = CallOptions(loopback_url, AUTH_TOKEN)
    async with LiveCall(await dial(options), options) as call:
        # Press a key while our echo is playing: the loopback answers with clear.
        speaking = asyncio.ensure_future(call.say(hello))
        assert await call.wait_until(lambda: call.playback.reply_played_ms >= 300, 5.0)
        await call.dtmf("5")
        assert await call.wait_until(lambda: call.tracker.clears >= 1, 2.0)
        await speaking
    report = call.report()
    dtmf_turn = next(t for t in report.turns if t.kind == "dtmf")
    assert dtmf_turn.barge_in and dtmf_turn.bargein_ms is not None
    assert 0 <= dtmf_turn.bargein_ms < 1000
    assert report.clears == 1 and call.clear_times[0] >= dtmf_turn.onset_s


async def test_forged_webhook_signature_is_refused(loopback_url: str) -> None:
    options = CallOptions(loopback_url, AUTH_TOKEN, sign_token="not-the-token")
    with pytest.raises(CallRefused) as info:
        await dial(options)
    assert info.value.status_code == 403


async def test_forged_stream_handshake_is_refused(loopback_url: str) -> None:
    plan = await dial(CallOptions(loopback_url, AUTH_TOKEN))
    forged = CallOptions(loopback_url, AUTH_TOKEN, sign_token="not-the-token")
    with pytest.raises(Exception, match="403"):
        async with LiveCall(plan, forged):
            pass


async def test_scenario_runs_against_the_loopback(loopback_url: str, tmp_path: Path) -> None:
    scenario = parse_scenario(
        """\
name: loopback
steps:
  - expect_silence: 300
  - say: Hello there, this is a test.
  - expect_bot_speech: 2000
  - wait_for_silence: 700
  - say: One more sentence to hear again.
  - dtmf: "1"
  - expect_clear: 2000
  - hangup
limits: {max_turn_latency_ms: 5000}
""",
        source="loopback.yaml",
    )
    voices = prepare_voices(scenario, tmp_path)
    record = tmp_path / "rec.wav"
    report = await run_scenario(
        scenario, CallOptions(loopback_url, AUTH_TOKEN), voices, record_path=record
    )
    assert report.ok, report.failures
    assert record.exists() and report.hangup_by == "caller"
    assert [t.kind for t in report.turns] == ["speech", "speech", "dtmf"]
    data = report.as_dict()
    assert data["ok"] is True and data["marks"]["received"] >= 1


async def test_a_failing_scenario_reports_each_failure_with_its_line(
    loopback_url: str, tmp_path: Path
) -> None:
    scenario = parse_scenario(
        """\
steps:
  - expect_bot_speech: 300
  - expect_clear: 200
  - expect_hangup: 300
""",
        source="bad.yaml",
    )
    report = await run_scenario(scenario, CallOptions(loopback_url, AUTH_TOKEN), {})
    assert report.failures == [
        "step 1 (line 2) ExpectBotSpeech: no bot audio within 300 ms",
        "step 2 (line 3) ExpectClear: no clear within 200 ms",
        "step 3 (line 4) ExpectHangup: the server did not hang up within 300 ms",
    ]
