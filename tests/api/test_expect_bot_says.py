"""`expect_bot_says` checks a scenario against what the server stored for the call, read
back through the call-records API of the server `callbridge serve` runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from support.server import running_server

from callbridge.server.app import serving_app
from callbridge.settings import Settings
from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.records import api_bot_turns
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import parse_scenario

from .conftest import API_TOKEN, AUTH_TOKEN

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = """
name: billing-says
steps:
  - expect_bot_speech: 2000
  - dtmf: "1"
  - expect_bot_speech: 1500
  - wait_for_silence: {ms: 700, timeout_ms: 30000}
  - expect_bot_says: "invoices are emailed"
  - hangup
"""


async def test_expect_bot_says_reads_the_stored_turns(
    make_settings: Callable[..., Settings],
) -> None:
    app = serving_app(make_settings(), ROOT / "examples" / "assistant.yaml")
    async with running_server(app) as base_url:
        said = api_bot_turns(base_url, API_TOKEN)
        passing = parse_scenario(SCENARIO)
        report = await run_scenario(
            passing, CallOptions(base_url, AUTH_TOKEN), prepare_voices(passing, ROOT),
            bot_turns=said,
        )
        assert report.ok, report.failures
        failing = parse_scenario(SCENARIO.replace("invoices are emailed", "free pizza"))
        report = await run_scenario(
            failing, CallOptions(base_url, AUTH_TOKEN), prepare_voices(failing, ROOT),
            bot_turns=said,
        )
    assert not report.ok
    assert any("free pizza" in failure for failure in report.failures)
