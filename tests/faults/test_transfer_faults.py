"""A ``<Dial>`` transfer that Twilio refuses: the caller is told, the conversation goes on
(today the exception ends the call with a socket error), and the record says why."""

from __future__ import annotations

from pathlib import Path

from fakes.script import Reply, ScriptedToolCall

from faults.expect import assert_clean
from faults.stack import seed_stack

ASK = "Can you put me through to a person please."
THEN = "Then tell me my balance."
TRANSFER_THEN_CARRY_ON = """
name: transfer-fails
steps:
  - expect_bot_speech: 3000
  - wait_for_silence: {ms: 700, timeout_ms: 20000}
  - say: "Can you put me through to a person please."
  - expect_bot_speech: 6000
  - wait_for_silence: {ms: 1500, timeout_ms: 20000}
  - say: "Then tell me my balance."
  - expect_bot_speech: 6000
  - wait_for_silence: {ms: 1200, timeout_ms: 20000}
  - hangup
"""


async def test_a_refused_transfer_is_told_and_the_call_goes_on(tmp_path: Path) -> None:
    transfer = Reply(text=("Transferring you now.",),
                     tool_calls=(ScriptedToolCall("transfer_call", {"to": "+15555550100"}),))
    balance = Reply(text=("Your balance is forty two dollars.",))
    async with seed_stack(tmp_path, transcripts=[ASK, THEN],
                          replies=[transfer, balance]) as stack:
        stack.twilio.fail_with = (400, 21211)  # "Invalid 'To' Phone Number"
        outcome = await stack.call(TRANSFER_THEN_CARRY_ON)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert outcome.report.hangup_by == "caller"  # the call was not dropped
    dials = [r for r in stack.twilio.requests if "<Dial" in "".join(r.form.get("Twiml", []))]
    assert len(dials) == 1
    assert stack.errors("transfer_failed") == 1
    (failed,) = outcome.events("transfer_failed")
    assert "21211" in failed["error"]
    said = [t["text"] for t in outcome.turns()]
    assert said[-2] == "Sorry, I couldn't transfer your call. I can keep helping you here."
    assert said[-1] == "Your balance is forty two dollars."
    assert stack.openai.requests[-1]["messages"][-1]["content"] == THEN
    # Heard: greeting; "transferring" with the failure right after it; the answer.
    assert outcome.kinds_heard() == ["tone"] * 3, outcome.heard
    both = len("Transferring you now.") + len(said[-2])
    assert outcome.heard[1].seconds > 0.85 * both * 0.03
