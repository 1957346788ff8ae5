"""Each turn-taking rule of DESIGN.md §3, proven on the engine with a manual clock."""

from __future__ import annotations

import pytest
from engine_harness import SPEECH, Harness, LaggyVad

from callbridge.engine.config import Script
from callbridge.engine.events import (
    CancelReply,
    FinalizeStt,
    Hangup,
    Phase,
    RecordTurn,
    ReplyKind,
    SendAudio,
    SendClear,
    StartReply,
    Transfer,
)
from callbridge.engine.transport import CallerAudio, CallerDtmf, CallerHungUp, EndCall
from callbridge.providers.base import ToolCall, TranscriptUpdate


def test_greeting_is_spoken_on_connect_and_the_bot_listens_after_its_mark() -> None:
    h = Harness(script=Script(first_message="Hello there. How can I help?"))
    assert h.engine.phase is Phase.GREETING
    greeting = h.starts(ReplyKind.GREETING)[0]
    assert greeting.text == "Hello there. How can I help?"
    h.answer_latest()
    assert h.engine.phase is Phase.GREETING  # audio queued and playing, marks not back yet
    waited = h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    assert 500 <= waited <= 800  # 6 words x 100 ms, lead and mark echo included


def test_endpointing_waits_the_configured_silence() -> None:
    for endpointing in (500, 800):
        h = Harness(endpointing_ms=endpointing)
        h.speak(600)
        assert h.engine.phase is Phase.USER_SPEAKING
        waited = h.wait_until(lambda h=h: h.engine.phase is Phase.THINKING)
        assert endpointing <= waited <= endpointing + 20


def test_a_pause_shorter_than_endpointing_does_not_end_the_turn() -> None:
    h = Harness()
    h.speak(400)
    h.silence(400)  # a mid-sentence pause
    h.speak(400)
    assert h.engine.phase is Phase.USER_SPEAKING
    h.silence(520)
    assert h.engine.phase is Phase.THINKING
    assert len(_live_answers(h)) == 1  # an answer prepared during the pause was dropped


def test_speech_shorter_than_start_ms_is_not_a_turn() -> None:
    h = Harness()
    h.speak(120)
    h.silence(1000)
    assert h.engine.phase is Phase.LISTENING
    assert not h.starts()


def _live_answers(h: Harness) -> list[StartReply]:
    cancelled = {c.reply_id for c in h.commands if isinstance(c, CancelReply)}
    return [a for a in h.starts(ReplyKind.ANSWER) if a.reply_id not in cancelled]


LONG_ANSWER = " ".join(["This is a long answer with many words in it for you."] * 3)


def _bot_speaking(h: Harness) -> None:
    h.speak(400)
    h.silence(520)
    h.answer_latest(LONG_ANSWER)
    h.silence(100)
    assert h.engine.phase is Phase.BOT_SPEAKING


def test_a_150_ms_blip_does_not_interrupt_but_250_ms_does() -> None:
    h = Harness()
    _bot_speaking(h)
    h.speak(140)
    h.silence(100)
    assert h.count(SendClear) == 0
    assert h.engine.phase is Phase.BOT_SPEAKING
    h.speak(260)
    assert h.count(SendClear) == 1
    assert h.count(CancelReply) == 1
    assert h.engine.phase is Phase.USER_SPEAKING


def test_clear_is_sent_once_the_debounce_is_reached() -> None:
    h = Harness(interrupt_min_ms=200)
    _bot_speaking(h)
    for _ in range(9):
        h.frame(True)
    assert h.count(SendClear) == 0
    h.frame(True)  # the 10th frame: 200 ms of continuous speech
    assert h.count(SendClear) == 1


def test_a_vad_that_confirms_late_does_not_delay_the_clear() -> None:
    h = Harness(vad=LaggyVad(lag_frames=4))  # the model says "speech" 80 ms late
    _bot_speaking(h)
    for _ in range(9):
        h.frame(True)
    assert h.count(SendClear) == 0
    h.frame(True)  # 200 ms after the caller's first loud frame, not 280 ms
    assert h.count(SendClear) == 1


def test_three_rapid_interrupts_cause_one_clear() -> None:
    h = Harness()
    _bot_speaking(h)
    for _ in range(3):  # "no — wait — yes"
        h.speak(300)
        h.silence(200)
    assert h.count(SendClear) == 1
    assert h.engine.barge_ins == 1


def test_an_interrupt_decided_more_than_a_second_late_is_dropped() -> None:
    h = Harness()
    _bot_speaking(h)
    # The network holds the caller's audio back for 1.2 s, then delivers it in a burst.
    held = 60
    for _ in range(held):
        h.frame(True, arrive=False)
    stamp = h.stamp_ms - held * 20
    for i in range(held):
        h.feed(CallerAudio(SPEECH, stamp + i * 20))
    assert h.count(SendClear) == 0
    assert h.engine.stale_interrupts == 1
    assert h.engine.phase is Phase.BOT_SPEAKING


def test_barge_in_waits_for_words_when_the_transcriber_heard_none() -> None:
    h = Harness(stt=True)
    h.speak(400)
    h.silence(520)
    h.feed(TranscriptUpdate("hello", is_final=True))
    h.answer_latest("This is a long answer with many words in it for you.")
    h.silence(100)
    h.speak(100)
    h.feed(TranscriptUpdate("", is_final=False))  # STT heard the noise, no words
    h.speak(200)
    assert h.count(SendClear) == 0
    h.feed(TranscriptUpdate("wait", is_final=False))
    h.speak(20)
    assert h.count(SendClear) == 1


def test_context_after_an_interruption_holds_only_the_heard_text() -> None:
    h = Harness()
    h.speak(400)
    h.silence(520)
    h.answer_latest("One two three four.", "Five six seven eight nine ten.")
    # Segment 1 (400 ms) plays and its mark returns; then 300 ms into segment 2...
    h.silence(400 + 60)
    h.silence(200)
    h.speak(200)  # ...the caller speaks (onset at ~460 ms into segment 2 minus debounce)
    assert h.count(SendClear) == 1
    interrupted = [c.turn for c in h.commands if isinstance(c, RecordTurn)][-1]
    assert interrupted.interrupted
    assert interrupted.heard_text is not None
    assert interrupted.heard_text.startswith("One two three four. Five six")
    assert "nine ten" not in interrupted.heard_text
    h.silence(520)
    messages = h.starts(ReplyKind.ANSWER)[-1].messages
    assistant = [m.content for m in messages if m.role == "assistant"]
    assert assistant == [interrupted.heard_text]


def test_a_double_final_transcript_yields_one_reply() -> None:
    h = Harness(stt=True)
    h.speak(400)
    h.feed(TranscriptUpdate("check my bill", is_final=True, speech_final=True))
    h.silence(520)
    h.feed(TranscriptUpdate("check my bill", is_final=True, speech_final=True))
    h.silence(200)
    answers = h.starts(ReplyKind.ANSWER)
    assert len(answers) == 1
    assert answers[0].messages[-1].content == "check my bill"


def test_endpoint_waits_for_the_final_transcript_then_times_out() -> None:
    h = Harness(stt=True, stt_timeout_ms=1000)
    h.speak(400)
    h.feed(TranscriptUpdate("check my", is_final=False))
    h.silence(520)
    assert h.count(FinalizeStt) == 1
    # An answer to the interim words is held, not released: the final is owed.
    assert [r.messages[-1].content for r in h.starts(ReplyKind.ANSWER)] == ["check my"]
    assert h.engine.phase is Phase.USER_SPEAKING
    h.feed(TranscriptUpdate("check my bill", is_final=True))
    assert h.starts(ReplyKind.ANSWER)[-1].messages[-1].content == "check my bill"
    assert h.engine.phase is Phase.THINKING

    h2 = Harness(stt=True, stt_timeout_ms=1000)
    h2.speak(400)
    h2.feed(TranscriptUpdate("mumble", is_final=False))
    waited = h2.wait_until(lambda: h2.engine.phase is not Phase.USER_SPEAKING)
    # "mumble" reads finished: the quick endpoint (250 ms), then the STT timeout (1 s).
    assert 1250 <= waited <= 1290


def test_hangup_waits_for_the_goodbyes_mark() -> None:
    h = Harness(script=Script(end_call_message="Thanks for calling, goodbye."))
    h.speak(400)
    h.silence(520)
    request = h.starts(ReplyKind.ANSWER)[-1]
    from callbridge.engine.events import ReplyAction

    h.feed(ReplyAction(request.reply_id, ToolCall("c1", "end_call")))
    h.answer(request)  # no words: the engine says the goodbye itself
    goodbye = h.starts(ReplyKind.GOODBYE)[-1]
    h.answer_latest()
    assert goodbye.text == "Thanks for calling, goodbye."
    h.silence(100)
    assert not h.hung_up()  # the audio was sent, but not yet played
    waited = h.wait_until(h.hung_up)
    assert 200 <= waited <= 500
    assert h.engine.phase is Phase.ENDED


def test_hangup_happens_even_if_the_mark_never_returns() -> None:
    h = Harness(hangup_mark_timeout_s=3)
    h.feed(CallerDtmf("0"))
    h.line.pending.clear()
    h.feed(EndCall("test", "Bye now."))  # the operator's hang-up: goodbye, then hang up
    assert h.starts()[-1].text == "Bye now."
    h.answer_latest()
    h.line.pending.clear()  # marks lost on the way
    h.silence(100)
    h.line.pending.clear()
    h.wait_until(h.hung_up, max_ms=4000)


def test_idle_reprompts_then_hangs_up() -> None:
    h = Harness(idle_timeout_s=8, idle_max_reprompts=2)
    for expected in (1, 2):
        waited = h.wait_until(lambda e=expected: len(h.starts(ReplyKind.REPROMPT)) == e)
        assert 7980 <= waited <= 8600
        h.answer_latest()
    h.wait_until(lambda: bool(h.starts(ReplyKind.GOODBYE)))
    h.answer_latest()
    h.wait_until(h.hung_up)
    assert h.count(Hangup) == 1


def test_speaking_resets_the_idle_reprompts() -> None:
    h = Harness(idle_timeout_s=2, idle_max_reprompts=1)
    h.wait_until(lambda: len(h.starts(ReplyKind.REPROMPT)) == 1)
    h.answer_latest()
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    h.speak(400)
    h.silence(520)
    h.answer_latest("Sure.")
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    h.wait_until(lambda: len(h.starts(ReplyKind.REPROMPT)) == 2)


def test_dtmf_over_the_bot_interrupts_and_answers_the_digit() -> None:
    h = Harness()
    _bot_speaking(h)
    h.feed(CallerDtmf("1"))
    assert h.count(SendClear) == 1
    request = h.starts(ReplyKind.ANSWER)[-1]
    assert request.messages[-1].dtmf == "1"
    assert h.engine.phase is Phase.THINKING


def test_caller_who_goes_on_gets_one_answer_to_the_whole_thing() -> None:
    h = Harness(stt=True)
    h.speak(400)
    h.feed(TranscriptUpdate("I want to", is_final=True))
    h.silence(520)
    first = h.starts(ReplyKind.ANSWER)[-1]
    h.speak(300)  # before any reply audio: the answer is dropped unheard
    assert any(isinstance(c, CancelReply) and c.reply_id == first.reply_id for c in h.commands)
    h.feed(TranscriptUpdate("pay my bill", is_final=True))
    h.silence(520)
    second = h.starts(ReplyKind.ANSWER)[-1]
    assert second.reply_id != first.reply_id
    users = [m.content for m in second.messages if m.role == "user"]
    assert users == ["I want to pay my bill"]
    assert h.count(SendClear) == 0


def test_transfer_action_transfers_after_the_reply_played() -> None:
    h = Harness()
    h.speak(400)
    h.silence(520)
    request = h.starts(ReplyKind.ANSWER)[-1]
    from callbridge.engine.events import ReplyAction

    h.feed(ReplyAction(request.reply_id, ToolCall("c1", "transfer_call", '{"to": "+15550100"}')))
    h.answer(request, "Transferring you now.")
    assert h.count(Transfer) == 0
    h.wait_until(lambda: h.count(Transfer) == 1)
    assert h.engine.phase is Phase.ENDING  # until the line confirms the transfer
    from callbridge.engine.events import TransferDone

    h.feed(TransferDone())
    assert h.engine.phase is Phase.ENDED


def test_max_duration_ends_the_call_politely() -> None:
    h = Harness(max_duration_s=5, idle_timeout_s=60)
    h.wait_until(lambda: bool(h.starts(ReplyKind.GOODBYE)), max_ms=6000)
    h.answer_latest()
    h.wait_until(h.hung_up)


def test_reply_failure_apologises_then_hangs_up() -> None:
    from callbridge.engine.events import ReplyFailed

    h = Harness()
    h.speak(400)
    h.silence(520)
    h.feed(ReplyFailed(h.starts(ReplyKind.ANSWER)[-1].reply_id, "llm: 500"))
    apology = h.starts(ReplyKind.APOLOGY)[-1]
    assert apology.text
    h.answer_latest()
    h.wait_until(h.hung_up)


def test_caller_hangup_ends_the_call_and_cancels_the_reply() -> None:
    h = Harness()
    _bot_speaking(h)
    h.feed(CallerHungUp())
    assert h.engine.phase is Phase.ENDED
    assert h.count(CancelReply) == 1
    assert h.engine.next_deadline() is None


def test_the_same_words_in_a_new_utterance_are_a_new_turn() -> None:
    h = Harness(stt=True)
    for expected in (1, 2):
        h.speak(400)
        h.feed(TranscriptUpdate("yes", is_final=True))
        h.silence(520)
        answers = h.starts(ReplyKind.ANSWER)
        assert len(answers) == expected  # no wait for the STT timeout the second time
        h.answer_latest("Okay.")
        h.wait_until(lambda: h.engine.phase is Phase.LISTENING)


def test_a_keypress_answer_longer_than_the_idle_timeout_does_not_stall_the_timers() -> None:
    h = Harness(idle_timeout_s=2)
    h.feed(CallerDtmf("1"))  # from LISTENING straight to THINKING
    h.answer_latest(" ".join(["word"] * 40) + ".")  # 4 s of speech
    h.silence(3000)  # the old idle deadline passes while the bot speaks
    assert h.engine.phase is Phase.BOT_SPEAKING
    assert not h.starts(ReplyKind.REPROMPT)
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    waited = h.wait_until(lambda: bool(h.starts(ReplyKind.REPROMPT)))
    assert 1980 <= waited <= 2100


def test_the_answer_is_prepared_in_the_silence_and_plays_at_the_endpoint() -> None:
    h = Harness(speculate_ms=200, endpointing_ms=500)
    h.speak(400)
    h.silence(200)
    assert len(h.starts(ReplyKind.ANSWER)) == 1  # started early...
    assert h.engine.phase is Phase.USER_SPEAKING
    h.answer_latest("Sure, here it is.")
    h.silence(280)
    assert h.count(SendAudio) == 0  # ...but unheard until the endpoint
    h.silence(20)
    assert h.engine.phase is Phase.BOT_SPEAKING
    assert h.line.audio_frames == 10  # the whole lead goes out at the endpoint itself...
    assert h.count(SendAudio) == 5  # ...as 40 ms messages
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    turn = [c.turn for c in h.commands if isinstance(c, RecordTurn)][-1]
    assert turn.latency_ms["first_frame"] == 0.0 and turn.latency_ms["speculated_ms"] >= 280
    assert turn.latency_ms["first_sentence"] == 0.0  # ready before the endpoint


def test_a_turn_records_when_its_first_sentence_was_ready() -> None:
    """The dashboard's waterfall draws the model's first sentence apart from TTS audio."""
    h = Harness()
    h.feed(CallerDtmf("1"))  # straight to THINKING: the reply starts now
    h.silence(120)
    h.answer_latest("Billing, one moment.")
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    turn = [c.turn for c in h.commands if isinstance(c, RecordTurn)][-1]
    assert turn.latency_ms["first_sentence"] == pytest.approx(120.0)
    assert turn.latency_ms["first_sentence"] <= turn.latency_ms["first_audio"]


def test_a_held_answer_is_dropped_unheard_when_the_caller_goes_on() -> None:
    h = Harness(stt=True)
    h.speak(400)
    h.feed(TranscriptUpdate("I want to", is_final=True))
    h.silence(300)
    early = h.starts(ReplyKind.ANSWER)[-1]
    assert early.messages[-1].content == "I want to"
    h.answer_latest("Sure.")
    h.speak(300)
    assert any(isinstance(c, CancelReply) and c.reply_id == early.reply_id for c in h.commands)
    h.feed(TranscriptUpdate("pay my bill", is_final=True))
    h.silence(520)
    (answer,) = _live_answers(h)
    assert [m.content for m in answer.messages if m.role == "user"] == ["I want to pay my bill"]
    assert h.count(SendAudio) == 0 and h.count(SendClear) == 0


def test_speculation_off_starts_the_answer_at_the_endpoint() -> None:
    h = Harness(speculate_ms=0)
    h.speak(400)
    waited = h.wait_until(lambda: bool(h.starts(ReplyKind.ANSWER)))
    assert 500 <= waited <= 520


def test_with_a_transcriber_the_held_answer_plays_at_the_endpoint_not_after_a_timeout() -> None:
    h = Harness(
        stt=True, speculate_ms=200, endpointing_ms=500, stt_timeout_ms=1000, end_of_turn="off"
    )
    h.speak(400)
    h.silence(100)
    h.feed(TranscriptUpdate("check my bill", is_final=True, speech_final=True))
    h.silence(120)
    assert h.starts(ReplyKind.ANSWER)  # held
    h.answer_latest("Sure.")
    waited = h.wait_until(lambda: h.engine.phase is Phase.BOT_SPEAKING)
    assert 260 <= waited <= 300  # at 500 ms of silence, not after the STT timeout


def _endpoint_after(words: str, **turns: object) -> int:
    h = Harness(stt=True, **turns)
    h.speak(400)
    h.feed(TranscriptUpdate(words, is_final=True))
    return h.wait_until(lambda: h.engine.phase is Phase.THINKING)


def test_finished_words_end_the_turn_after_the_quick_silence() -> None:
    assert 240 <= _endpoint_after("I would like to check my bill.") <= 260
    assert 240 <= _endpoint_after("what is my balance") <= 260


def test_a_caller_pausing_mid_sentence_gets_the_full_silence() -> None:
    assert 500 <= _endpoint_after("I would like to") <= 520
    assert 500 <= _endpoint_after("my account number is, um") <= 520


def test_end_of_turn_off_always_waits_the_full_silence() -> None:
    assert 500 <= _endpoint_after("check my bill.", end_of_turn="off") <= 520


def test_the_phase_changes_only_along_the_table() -> None:
    """``enter`` is the one place the phase changes, and only to a phase the table lists."""
    import pytest

    from callbridge.engine.core import NEXT_PHASES

    h = Harness()
    assert h.engine.phase is Phase.LISTENING
    with pytest.raises(RuntimeError):
        h.engine.enter(Phase.BOT_SPEAKING)  # nothing to say yet: the bot cannot speak
    assert NEXT_PHASES[Phase.ENDED] == frozenset()
    h.feed(CallerHungUp())
    assert h.engine.phase is Phase.ENDED
    h.feed(CallerDtmf("1"))  # an ended call handles nothing
    assert h.engine.phase is Phase.ENDED and not h.starts(ReplyKind.ANSWER)
