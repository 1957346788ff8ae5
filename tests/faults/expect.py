"""What every fault test checks, and the calls they place (shared with bench/soak.py)."""

from __future__ import annotations

from callbridge.simulator.caller import LiveCall
from faults.stack import Outcome

__all__ = [
    "ANSWERED",
    "BILL",
    "HANGS_UP",
    "assert_apologised",
    "assert_clean",
    "at_speech_end",
    "bot_speaking_for",
]

BILL = "I need help with my bill please."

ANSWERED = """
name: answered
steps:
  - expect_bot_speech: 3000
  - wait_for_silence: {ms: 700, timeout_ms: 20000}
  - say: "I need help with my bill please."
  - expect_bot_speech: 6000
  - wait_for_silence: {ms: 1500, timeout_ms: 20000}
  - hangup
"""
"""Greeting, one question, its answer; then the caller hangs up."""

HANGS_UP = """
name: server-hangs-up
steps:
  - expect_bot_speech: 3000
  - wait_for_silence: {ms: 700, timeout_ms: 20000}
  - say: "I need help with my bill please."
  - expect_hangup: 20000
"""
"""Greeting, one question; then the server is expected to end the call."""


def assert_clean(outcome: Outcome) -> None:
    """Never a socket error of ours, nothing unhandled in the logs."""
    assert outcome.report.close_code != 1011, outcome.report.close_code
    assert outcome.report.protocol_errors == []
    assert outcome.unhandled == [], [r.getMessage() for r in outcome.unhandled]


def assert_apologised(outcome: Outcome, provider: str) -> None:
    """Heard: the fallback voice last; then the server hung up through Twilio REST."""
    assert outcome.report.hangup_by == "server"
    assert outcome.rest_status == "completed"
    assert outcome.kinds_heard()[-1] == "speech", outcome.heard
    assert outcome.heard[-1].seconds > 1.5  # the whole apology, not a click
    assert outcome.outcome == "apology"
    failed = outcome.events("provider_failed")
    assert [f["provider"] for f in failed] == [provider], failed
    apology = outcome.turns()[-1]
    assert apology["kind"] == "apology", apology
    assert apology["text"] == "Sorry, I'm having trouble right now. Please call again later."


async def at_speech_end(call: LiveCall) -> None:
    def ended() -> bool:
        return bool(call.tracker.current and call.tracker.current.end_s is not None)

    assert await call.wait_until(ended, 30)


async def bot_speaking_for(call: LiveCall, ms: float, *, reply: int = 1) -> None:
    """Until the caller has heard ``ms`` of the ``reply``-th answer (0: the greeting)."""
    def reached() -> bool:
        return (len(call.bot_speech_starts) > reply
                and call.playback.reply_played_ms >= ms)

    assert await call.wait_until(reached, 30)
