"""Vendor faults on the engine, with a manual clock (DESIGN.md §3 "Failures", issue 10):
the transcriber dropping and coming back, or never; dead air bounded by a hold line; a
failed transfer told to the caller."""

from __future__ import annotations

from engine_harness import BOT_WORD, Harness

from callbridge.engine.config import Script
from callbridge.engine.events import (
    HoldAudio,
    HoldDone,
    Phase,
    RecordEvent,
    RecordTurn,
    ReplyAction,
    ReplyAudio,
    ReplyDone,
    ReplyKind,
    ReplySegment,
    SendAudio,
    SendClear,
    SpeakHold,
    SttDown,
    SttFailed,
    SttUp,
    Transfer,
    TransferFailed,
)
from callbridge.providers.base import ToolCall, TranscriptUpdate

HOLD_AUDIO = b"\x10" * 1600  # 200 ms


def _events(h: Harness, kind: str) -> list[dict[str, object]]:
    return [dict(c.event.data) for c in h.commands
            if isinstance(c, RecordEvent) and c.event.kind == kind]


def test_a_turn_that_ends_while_stt_is_down_waits_for_its_words_and_holds_the_line() -> None:
    h = Harness(stt=True, stt_timeout_ms=1000)
    h.speak(300)
    h.feed(SttDown("deepgram", "deepgram: closed the stream: code 1011 'NET-0001'"))
    h.speak(300)
    h.silence(600)  # the endpoint: STT owes the turn's words
    assert h.engine.phase is Phase.USER_SPEAKING
    h.silence(1500)  # past the STT timeout: still waiting, not answered without words
    assert not h.starts(ReplyKind.ANSWER)
    assert h.engine.phase is Phase.USER_SPEAKING
    waited = h.wait_until(lambda: h.count(SpeakHold) == 1)
    assert 3400 <= waited + 2100 <= 3600  # 3 s after the endpoint (500 ms of silence)
    hold = next(c for c in h.commands if isinstance(c, SpeakHold))
    assert hold.text == "One moment, please."
    sent = h.count(SendAudio)
    h.feed(HoldAudio(hold.hold_id, HOLD_AUDIO))
    h.feed(HoldDone(hold.hold_id))
    h.silence(400)
    assert h.count(SendAudio) > sent  # the caller hears it
    # STT is back: the re-sent audio is finalised and the turn is answered with its words.
    h.feed(SttUp("deepgram", resent_ms=600))
    h.silence(100)
    h.feed(TranscriptUpdate("I need help with my bill", is_final=True))
    answer = h.starts(ReplyKind.ANSWER)[-1]
    assert answer.messages[-1].content == "I need help with my bill"
    assert _events(h, "stt_lost")[0]["provider"] == "deepgram"
    assert _events(h, "stt_restored")[0]["resent_ms"] == 600
    assert not _events(h, "stt_timeout")


def test_stt_back_without_words_falls_back_to_the_stt_timeout() -> None:
    h = Harness(stt=True, stt_timeout_ms=500)
    h.speak(400)
    h.feed(SttDown("deepgram", "closed"))
    h.silence(600)
    h.feed(SttUp("deepgram", resent_ms=400))
    h.wait_until(lambda: bool(h.starts(ReplyKind.ANSWER)), max_ms=700)
    assert _events(h, "stt_timeout")


def test_stt_given_up_apologises_and_hangs_up_with_the_provider_recorded() -> None:
    script = Script(apology_message="Sorry, we have a problem. Please call back.")
    h = Harness(stt=True, script=script)
    h.speak(400)
    h.feed(SttFailed("deepgram", "deepgram: cannot connect: ConnectionRefusedError()"))
    apology = h.starts(ReplyKind.APOLOGY)[-1]
    assert apology.text == "Sorry, we have a problem. Please call back."
    h.answer_latest()
    h.wait_until(h.hung_up)
    (failed,) = _events(h, "provider_failed")
    assert failed == {"stage": "stt", "provider": "deepgram",
                      "error": "deepgram: cannot connect: ConnectionRefusedError()"}


def test_stt_given_up_while_the_bot_speaks_clears_the_line_first() -> None:
    h = Harness(stt=True, script=Script(first_message="Hello, how can I help you today?"))
    h.answer_latest()
    h.silence(100)
    assert h.engine.phase is Phase.GREETING
    h.feed(SttFailed("deepgram", "gone"))
    assert h.count(SendClear) == 1
    assert h.starts(ReplyKind.APOLOGY)


def test_dead_air_while_the_answer_is_retried_gets_a_hold_line_then_the_answer() -> None:
    h = Harness(script=Script(hold_after_s=2.0))
    h.speak(400)
    h.silence(520)
    answer = h.starts(ReplyKind.ANSWER)[-1]
    assert h.engine.phase is Phase.THINKING
    waited = h.wait_until(lambda: h.count(SpeakHold) == 1)
    assert 1900 <= waited <= 2100
    (hold,) = [c for c in h.commands if isinstance(c, SpeakHold)]
    h.feed(HoldAudio(hold.hold_id, HOLD_AUDIO))
    h.feed(HoldDone(hold.hold_id))
    h.silence(100)
    h.answer(answer, "Your bill is paid.")
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    (said,) = [c.turn for c in h.commands
               if isinstance(c, RecordTurn) and c.turn.role == "assistant"]
    assert said.text == "One moment, please. Your bill is paid."
    assert _events(h, "hold")


def test_no_hold_line_when_the_answer_comes_in_time_or_when_disabled() -> None:
    h = Harness()
    h.speak(400)
    h.silence(520)
    h.silence(1000)
    h.answer_latest("Quick answer.")
    h.silence(5000)
    assert h.count(SpeakHold) == 0
    quiet = Harness(script=Script(hold_message=None))
    quiet.speak(400)
    quiet.silence(6000)
    assert quiet.count(SpeakHold) == 0


def test_a_long_wait_gets_at_most_two_hold_lines() -> None:
    h = Harness(script=Script(hold_after_s=1.0))
    h.speak(400)
    h.silence(520)
    for n in (1, 2):
        h.wait_until(lambda n=n: h.count(SpeakHold) == n)
        hold = [c for c in h.commands if isinstance(c, SpeakHold)][-1]
        h.feed(HoldAudio(hold.hold_id, HOLD_AUDIO))
        h.feed(HoldDone(hold.hold_id))
    h.silence(5000)
    assert h.count(SpeakHold) == 2


def test_a_failed_transfer_is_told_to_the_caller_and_the_call_goes_on() -> None:
    h = Harness(script=Script(transfer_failed_message="Sorry, that transfer failed."))
    h.speak(400)
    h.silence(520)
    request = h.starts(ReplyKind.ANSWER)[-1]
    h.feed(ReplyAction(request.reply_id, ToolCall("c1", "transfer_call", '{"to": "+15550100"}')))
    h.answer(request, "Transferring you now.")
    h.wait_until(lambda: h.count(Transfer) == 1)
    h.feed(TransferFailed("Twilio REST 21210: the number is not verified"))
    told = h.starts()[-1]
    assert told.text == "Sorry, that transfer failed."
    h.answer_latest()
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    assert not h.hung_up()
    assert _events(h, "transfer_failed")[0]["error"].startswith("Twilio REST")  # type: ignore[union-attr]
    h.speak(400)
    h.silence(520)
    assert h.engine.phase is Phase.THINKING  # the conversation carries on



def test_an_apology_that_fails_itself_hangs_up_instead_of_looping() -> None:
    from callbridge.engine.events import ReplyFailed

    h = Harness(stt=True)
    h.speak(400)
    h.feed(SttFailed("deepgram", "gone"))
    apology = h.starts(ReplyKind.APOLOGY)[-1]
    h.feed(ReplyFailed(apology.reply_id, "espeak: espeak_Synth returned 2", "espeak"))
    assert h.hung_up()
    assert len(h.starts(ReplyKind.APOLOGY)) == 1


def test_a_voice_stalling_mid_reply_gets_a_hold_line_after_the_audio_runs_out() -> None:
    h = Harness(script=Script(hold_after_s=2.0))
    h.speak(400)
    h.silence(520)
    answer = h.starts(ReplyKind.ANSWER)[-1]
    h.feed(ReplySegment(answer.reply_id, 0, "Your bill was forty two dollars."))
    h.feed(ReplyAudio(answer.reply_id, 0, BOT_WORD * 3))  # 300 ms, then the voice stalls
    h.silence(300)
    assert h.engine.phase is Phase.BOT_SPEAKING
    waited = h.wait_until(lambda: h.count(SpeakHold) == 1)
    assert 1800 <= waited <= 2300  # 2 s after the last frame played
    hold = next(c for c in h.commands if isinstance(c, SpeakHold))
    h.feed(HoldAudio(hold.hold_id, HOLD_AUDIO))
    h.feed(HoldDone(hold.hold_id))
    h.feed(ReplyAudio(answer.reply_id, 0, BOT_WORD * 3))  # resumed: the rest of it
    h.feed(ReplyDone(answer.reply_id))
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    assert h.count(SpeakHold) == 1


def test_a_reply_that_keeps_its_pace_gets_no_hold_line() -> None:
    h = Harness(script=Script(hold_after_s=1.0))
    h.speak(400)
    h.silence(520)
    answer = h.starts(ReplyKind.ANSWER)[-1]
    for index in range(4):
        h.feed(ReplySegment(answer.reply_id, index, "Some words here."))
        h.feed(ReplyAudio(answer.reply_id, index, BOT_WORD * 3))
        h.silence(300)
    h.feed(ReplyDone(answer.reply_id))
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    assert h.count(SpeakHold) == 0


def test_barge_in_runs_on_the_vad_alone_while_stt_is_down() -> None:
    h = Harness(stt=True, interrupt_min_words=2,
                script=Script(first_message="Hello, thanks for calling Acme support today."))
    h.answer_latest()
    h.silence(100)
    h.speak(100)
    h.feed(TranscriptUpdate("um", is_final=False))  # one word: not enough to interrupt
    h.speak(200)
    assert h.count(SendClear) == 0
    h.feed(SttDown("deepgram", "closed the stream: code 1011 'NET-0001'"))
    h.speak(40)
    assert h.count(SendClear) == 1  # the words it waited for cannot come: VAD decides


def test_a_reply_failing_midway_is_on_record_apart_from_the_apology() -> None:
    from callbridge.engine.events import ReplyFailed

    h = Harness()
    h.speak(400)
    h.silence(520)
    answer = h.starts(ReplyKind.ANSWER)[-1]
    h.feed(ReplySegment(answer.reply_id, 0, "Your bill was"))
    h.feed(ReplyAudio(answer.reply_id, 0, BOT_WORD * 3))
    h.feed(ReplyFailed(answer.reply_id, "11labs: socket closed", "11labs"))
    h.answer_latest()
    h.wait_until(h.hung_up)
    said = [c.turn for c in h.commands if isinstance(c, RecordTurn) and c.turn.role == "assistant"]
    assert [(t.kind, t.text, t.interrupted) for t in said] == [
        ("answer", "Your bill was", True),
        ("apology", Script().apology_message, False),
    ]
