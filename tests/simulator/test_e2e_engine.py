"""The real server with the real engine and `make serve`'s default assistant, driven by
the simulator: what a caller experiences, end to end (issue 4's "done when").

Marked ``engine``: they run in real time (about two minutes); ``-m "not engine"`` skips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.server import running_server
from support.twilio_api import FakeTwilioApi, fake_twilio_api

from callbridge.server.app import create_app
from callbridge.settings import load_settings
from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions, CallRefused, dial
from callbridge.simulator.report import CallReport
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import Scenario, load_scenario, parse_scenario
from callbridge.voice_agent import build_runner

from .conftest import AUTH_TOKEN

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "scenarios"
ACCOUNT_SID = "AC" + "1" * 32


@dataclass
class Line:
    base_url: str
    api: FakeTwilioApi

    def options(self, **overrides: str) -> CallOptions:
        options = CallOptions(self.base_url, AUTH_TOKEN, account_sid=ACCOUNT_SID, **overrides)
        self.api.add_call(options.call_sid)
        return options

    async def run(self, scenario: Scenario) -> CallReport:
        voices = prepare_voices(scenario, SCENARIOS)
        return await run_scenario(scenario, self.options(), voices)


@pytest.fixture
def twilio_api() -> Iterator[FakeTwilioApi]:
    with fake_twilio_api(ACCOUNT_SID, AUTH_TOKEN) as api:
        yield api


@pytest.fixture
async def line(tmp_path: Path, twilio_api: FakeTwilioApi) -> AsyncIterator[Line]:
    settings = load_settings(
        auth_token=AUTH_TOKEN,
        account_sid=ACCOUNT_SID,
        stream_secret="e" * 32,
        data_dir=tmp_path,
        twilio_api_base_url=twilio_api.base_url,
    )
    runner = build_runner(ROOT / "examples" / "assistant.yaml", {})
    async with running_server(create_app(settings, runner)) as base_url:
        yield Line(base_url, twilio_api)


async def test_greeting_plays_promptly_and_whole(line: Line) -> None:
    report = await line.run(load_scenario(SCENARIOS / "greeting.yaml"))
    assert report.ok, report.failures
    assert report.bot_audio_ms > 3000  # the whole menu, not a blip
    assert report.underruns == 0 and report.marks_echoed_played >= 1
    # How evenly it is paced is a figure for bench/load.py, not a timed assertion here.
    assert report.jitter(99) is not None


async def test_dtmf_branch_answers_the_key(line: Line) -> None:
    report = await line.run(load_scenario(SCENARIOS / "dtmf-billing.yaml"))
    assert report.ok, report.failures
    (turn,) = report.turns
    assert turn.kind == "dtmf" and turn.label == "1"
    assert turn.latency_ms is not None and turn.latency_ms > 0  # speed: bench/latency.py


async def test_barge_in_clears_the_greeting(line: Line) -> None:
    calls: list[LiveCall] = []
    scenario = load_scenario(SCENARIOS / "barge-in.yaml")
    voices = prepare_voices(scenario, SCENARIOS)
    report = await run_scenario(scenario, line.options(), voices, on_call=calls.append)
    assert report.ok, report.failures
    (turn,) = report.turns
    # Cleared while the caller was still talking (how fast: bench/bargein.py).
    assert turn.barge_in and turn.bargein_ms is not None and turn.bargein_ms > 0
    assert turn.end_s is not None and turn.onset_s + turn.bargein_ms / 1000 < turn.end_s
    assert report.clears >= 1 and report.cleared_ms > 0  # buffered greeting was dropped
    assert turn.stale_ms <= turn.bargein_ms + 100  # only what was in flight, one mark's worth
    # After the clear, no bot audio until the caller has finished: nothing stale leaks.
    cleared_at = turn.onset_s + turn.bargein_ms / 1000
    (call,) = calls
    assert all(t > turn.end_s for t in call.bot_speech_starts if t > cleared_at)


async def test_idle_caller_is_reprompted_then_hung_up_on(line: Line) -> None:
    scenario = parse_scenario(
        """\
name: idle
timeout_s: 90
steps:
  - expect_bot_speech: 1500
  - wait_for_silence: {ms: 1000, timeout_ms: 30000}
  - expect_silence: 6000            # idle timeout is 8 s: nothing before it
  - expect_bot_speech: 4000         # the first reprompt
  - wait_for_silence: {ms: 1000, timeout_ms: 30000}
  - expect_bot_speech: 12000        # the second reprompt
  - wait_for_silence: {ms: 1000, timeout_ms: 30000}
  - expect_bot_speech: 12000        # the goodbye
  - expect_hangup: 15000
""",
        source="idle.yaml",
    )
    options = line.options()
    report = await run_scenario(scenario, options, {})
    assert report.ok, report.failures
    assert report.hangup_by == "server"
    ended = [
        r
        for r in line.api.requests
        if options.call_sid in r.path and r.form.get("Status") == ["completed"]
    ]
    assert ended, "the engine must end the call through Twilio REST"


async def test_forged_signature_is_refused(line: Line) -> None:
    with pytest.raises(CallRefused) as info:
        await dial(line.options(sign_token="forged-token-forged-token"))
    assert info.value.status_code == 403
    plan = await dial(line.options())
    with pytest.raises(Exception, match="403"):
        async with LiveCall(plan, line.options(sign_token="forged-token-forged-token")):
            pass


@pytest.mark.parametrize(
    "name", ["goodbye", "keypad-barge-in", "speech-without-stt"], ids=lambda n: str(n)
)
async def test_the_other_example_scenarios_pass(line: Line, name: str) -> None:
    """Every file in examples/scenarios passes against `make serve`'s default assistant
    (the ones not run above)."""
    report = await line.run(load_scenario(SCENARIOS / f"{name}.yaml"))
    assert report.ok, report.failures
