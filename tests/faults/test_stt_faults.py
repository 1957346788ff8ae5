"""Speech-to-text faults on the seed stack: Deepgram's stream dropped mid-utterance with
its real close code, Deepgram unreachable, garbage on the stream, a stalled stream. The
words spoken across a repaired fault reach the model; an unrepairable one is heard as an
apology followed by a clean REST hang-up, and recorded with the provider's name."""

from __future__ import annotations

from pathlib import Path

from fakes.script import Reply

from callbridge.simulator.caller import LiveCall
from faults.chaos import HttpError, Refuse, Stall, WsClose, WsGarbage
from faults.expect import (
    ANSWERED,
    BILL,
    HANGS_UP,
    assert_apologised,
    assert_clean,
    at_speech_end,
)
from faults.stack import seed_stack

ANSWER = Reply(text=("Sure, your last bill was forty two dollars.",))
SCENARIO, UNREACHABLE = ANSWERED, HANGS_UP


async def test_deepgram_closing_1011_mid_utterance_loses_no_words(tmp_path: Path) -> None:
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER]) as stack:

        async def drop_at_the_end_of_the_words(call: LiveCall) -> None:
            await at_speech_end(call)
            # Deepgram's NET-0001 close, after the last word and before any final: what
            # the caller said lives only in the audio the vendor had not finalised.
            assert await stack.stt.strike(WsClose(1011, "NET-0001")) == 1

        outcome = await stack.call(SCENARIO, during=drop_at_the_end_of_the_words)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert outcome.report.hangup_by == "caller"
    # The words reached the model, from the re-sent audio on the second connection (the
    # answer heard is the last one asked: an early guess from interim words may precede it).
    assert stack.openai.requests[-1]["messages"][-1] == {"role": "user", "content": BILL}
    assert outcome.turns("user")[-1]["text"] == BILL
    assert len(stack.deepgram.sessions) == 2
    assert stack.deepgram.sessions[1].finals_sent >= 1
    # Heard: the greeting and the answer, both in the main voice.
    assert outcome.kinds_heard() == ["tone", "tone"], outcome.heard
    (lost,) = outcome.events("stt_lost")
    assert lost["provider"] == "deepgram" and "1011" in lost["error"]
    (restored,) = outcome.events("stt_restored")
    assert restored["resent_ms"] >= 1000  # the whole utterance went again
    assert stack.errors("stt_lost") == 1


async def test_deepgram_unreachable_is_retried_then_apologised_for(tmp_path: Path) -> None:
    # The real policy (1, 2, 4 s): the greeting plays meanwhile, the caller speaks, waits
    # 1.5 s in silence, hears "one moment", then the apology once the policy is spent.
    refusals = [Refuse()] * 8
    faults = {"retryDelaysS": [1.0, 2.0, 4.0], "holdAfterS": 1.5}
    async with seed_stack(tmp_path, transcripts=[BILL], stt_plans=refusals,
                          faults=faults) as stack:
        outcome = await stack.call(UNREACHABLE)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert_apologised(outcome, "deepgram")
    assert outcome.kinds_heard()[0] == "tone"  # the greeting did not wait for Deepgram
    assert outcome.events("hold")  # the caller was not left in silence while it retried
    assert stack.stt.connections == 4  # the first attempt and three retries
    assert [e["delay_s"] for e in outcome.events("provider_retry")] == [1.0, 2.0, 4.0]
    assert not stack.openai.requests  # no answer was made up without the caller's words


async def test_deepgram_refusing_the_upgrade_with_503_then_recovering(tmp_path: Path) -> None:
    plans = [HttpError(503, '{"err_code": "INTERNAL_SERVER_ERROR", "err_msg": "busy"}')] * 2
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER],
                          stt_plans=plans) as stack:
        outcome = await stack.call(SCENARIO)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert stack.openai.requests[-1]["messages"][-1]["content"] == BILL
    assert outcome.turns("user")[-1]["text"] == BILL
    assert len(outcome.events("provider_retry")) == 2


async def test_garbage_on_the_stream_is_skipped(tmp_path: Path) -> None:
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER],
                          stt_plans=[WsGarbage(after_down_frames=0)]) as stack:
        outcome = await stack.call(SCENARIO)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert stack.openai.requests[-1]["messages"][-1]["content"] == BILL
    assert outcome.turns("user")[-1]["text"] == BILL
    assert len(stack.deepgram.sessions) == 1


async def test_a_stalled_stream_is_replaced_and_its_words_recovered(tmp_path: Path) -> None:
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER]) as stack:

        async def stall_while_speaking(call: LiveCall) -> None:
            assert await call.wait_until(lambda: call.tracker.current is not None, 30)
            await stack.stt.strike(Stall())  # open, silent, and deaf from here

        outcome = await stack.call(SCENARIO, during=stall_while_speaking)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert stack.openai.requests[-1]["messages"][-1]["content"] == BILL
    assert outcome.turns("user")[-1]["text"] == BILL
    (lost,) = outcome.events("stt_lost")
    assert "no final transcript" in lost["error"]
    assert outcome.kinds_heard() == ["tone", "tone"], outcome.heard


async def test_deepgram_dropping_for_good_mid_call_apologises(tmp_path: Path) -> None:
    async with seed_stack(tmp_path, transcripts=[BILL], replies=[ANSWER]) as stack:

        async def take_deepgram_down(call: LiveCall) -> None:
            await at_speech_end(call)
            await stack.stt.go_down()  # connecting now fails with ECONNREFUSED
            await stack.stt.strike(WsClose(1011, "NET-0001"))

        outcome = await stack.call(UNREACHABLE, during=take_deepgram_down)

    assert outcome.report.ok, outcome.report.failures
    assert_clean(outcome)
    assert_apologised(outcome, "deepgram")
    assert outcome.events("stt_lost")
    assert "Connect" in outcome.events("provider_failed")[0]["error"]
