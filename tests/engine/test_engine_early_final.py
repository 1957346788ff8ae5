"""The turn's words early (issue 12): ``Finalize`` at the first silence the VAD is sure
of, and the held answer started from the interim words in hand — kept when the final
says the same, restarted when it does not, never played to a caller who pauses
mid-sentence. Manual clock, 20 ms frames."""

from __future__ import annotations

from engine_harness import Harness

from callbridge.engine.events import (
    CancelReply,
    FinalizeStt,
    Phase,
    RecordTurn,
    ReplyKind,
    SendAudio,
)
from callbridge.providers.base import TranscriptUpdate


def _user_turns(h: Harness) -> list[str]:
    return [c.turn.text for c in h.commands if isinstance(c, RecordTurn) and c.turn.role == "user"]


def test_finalize_goes_out_at_the_first_sure_silence_not_at_the_endpoint() -> None:
    h = Harness(stt=True, speculate_ms=200, endpointing_ms=500, end_of_turn="off")
    h.speak(600)
    h.feed(TranscriptUpdate("check my", is_final=False))
    h.silence(180)
    assert h.count(FinalizeStt) == 0  # 180 ms could still be a breath
    waited = h.wait_until(lambda: h.count(FinalizeStt) == 1)
    assert waited <= 40  # at 200 ms of silence (+ one frame of VAD)
    h.feed(TranscriptUpdate("check my bill", is_final=True))
    h.silence(400)  # through the endpoint
    assert h.count(FinalizeStt) == 1  # asked once per silence: the endpoint does not repeat it
    assert h.engine.phase is not Phase.USER_SPEAKING


def test_finalize_is_asked_again_after_the_caller_resumes() -> None:
    h = Harness(stt=True, speculate_ms=200, endpointing_ms=500, end_of_turn="off")
    h.speak(400)
    h.feed(TranscriptUpdate("I want", is_final=False))
    h.silence(260)
    h.feed(TranscriptUpdate("I want", is_final=True))
    h.speak(400)
    h.feed(TranscriptUpdate("my bill", is_final=False))
    h.silence(260)
    assert h.count(FinalizeStt) == 2


def test_a_final_with_the_same_words_keeps_the_held_answer() -> None:
    h = Harness(stt=True, speculate_ms=200, quick_endpointing_ms=300)
    h.speak(600)
    h.feed(TranscriptUpdate("what is my balance", is_final=False))
    h.silence(220)
    (held,) = h.starts(ReplyKind.ANSWER)
    assert held.messages[-1].content == "what is my balance"  # the interim words, at once
    h.answer(held, "Sure.")  # its audio is ready before the endpoint, and not yet sent
    assert h.line.audio_frames == 0
    h.silence(80)
    h.feed(TranscriptUpdate("What is my balance?", is_final=True))  # smart-formatted
    waited = h.wait_until(lambda: h.line.audio_frames > 0)
    assert h.count(CancelReply) == 0 and len(h.starts(ReplyKind.ANSWER)) == 1
    assert waited <= 40  # released at the quick endpoint (300 ms of silence)
    assert _user_turns(h) == ["What is my balance?"]  # the record keeps the final's words
    messages = h.engine.conversation.messages()
    assert [m.content for m in messages if m.role == "user"] == ["What is my balance?"]


def test_a_final_with_other_words_restarts_the_answer() -> None:
    h = Harness(stt=True, speculate_ms=200)
    h.speak(600)
    h.feed(TranscriptUpdate("check my bill", is_final=False))
    h.silence(220)
    (guess,) = h.starts(ReplyKind.ANSWER)
    h.feed(TranscriptUpdate("check my bill please", is_final=True))
    assert CancelReply(guess.reply_id) in h.commands
    restarted = h.starts(ReplyKind.ANSWER)[-1]
    assert restarted.reply_id != guess.reply_id
    assert restarted.messages[-1].content == "check my bill please"
    assert [m.role for m in restarted.messages].count("user") == 1  # no doubled words
    h.answer(restarted, "Sure.")
    h.wait_until(lambda: h.line.audio_frames > 0)
    assert _user_turns(h) == ["check my bill please"]


def test_a_guess_on_top_of_earlier_final_words_keeps_them_when_restarted() -> None:
    h = Harness(stt=True, speculate_ms=200)
    h.speak(600)
    h.feed(TranscriptUpdate("I need", is_final=True))
    h.speak(400)
    h.feed(TranscriptUpdate("my bil", is_final=False))
    h.silence(220)
    assert h.starts(ReplyKind.ANSWER)[-1].messages[-1].content == "I need my bil"
    h.feed(TranscriptUpdate("my bill", is_final=True))
    assert h.starts(ReplyKind.ANSWER)[-1].messages[-1].content == "I need my bill"


def test_a_caller_pausing_400_ms_mid_sentence_hears_nothing() -> None:
    h = Harness(stt=True, speculate_ms=200)  # the seed's 500 ms endpoint, lexical judge
    h.speak(1400)
    h.feed(TranscriptUpdate("I would like to check the", is_final=False))
    h.silence(200)
    (guess,) = h.starts(ReplyKind.ANSWER)  # speculated on the pause …
    h.answer(guess, "Sure, checking.")
    h.silence(100)
    h.feed(TranscriptUpdate("I would like to check the", is_final=True))  # … and confirmed
    h.silence(100)  # 400 ms of pause: "the" promises more, so the endpoint is 500 ms away
    assert h.line.audio_frames == 0
    h.speak(1000)  # the caller goes on
    assert CancelReply(guess.reply_id) in h.commands
    assert h.line.audio_frames == 0 and h.engine.phase is Phase.USER_SPEAKING
    h.feed(TranscriptUpdate("balance on my account", is_final=False))
    h.silence(200)
    h.feed(TranscriptUpdate("balance on my account.", is_final=True))
    answer = h.starts(ReplyKind.ANSWER)[-1]
    h.answer(answer, "Your balance is ten dollars.")
    h.wait_until(lambda: h.line.audio_frames > 0)
    # The model was asked with the interim words (held, then confirmed by the final) …
    assert answer.messages[-1].content == "I would like to check the balance on my account"
    assert h.count(CancelReply) == 1
    # … and the call's record has the final ones.
    assert _user_turns(h) == ["I would like to check the balance on my account."]
    before_answer = h.commands[: h.commands.index(answer)]
    assert not [c for c in before_answer if isinstance(c, SendAudio)]


def test_a_final_in_pieces_confirms_the_guess_once_whole() -> None:
    h = Harness(stt=True, speculate_ms=200)
    h.speak(600)
    h.feed(TranscriptUpdate("check my bill please", is_final=False))
    h.silence(220)
    (guess,) = h.starts(ReplyKind.ANSWER)
    h.feed(TranscriptUpdate("Check my", is_final=True))  # a span boundary inside the words
    assert h.count(CancelReply) == 0
    h.feed(TranscriptUpdate("bill please.", is_final=True, from_finalize=True))
    assert h.count(CancelReply) == 0 and h.starts(ReplyKind.ANSWER) == [guess]
    h.answer(guess, "Sure.")
    h.wait_until(lambda: h.line.audio_frames > 0)
    assert _user_turns(h) == ["Check my bill please."]


def test_a_flushed_final_shorter_than_the_guess_restarts_the_answer() -> None:
    h = Harness(stt=True, speculate_ms=200)
    h.speak(600)
    h.feed(TranscriptUpdate("check my bill please", is_final=False))
    h.silence(220)
    (guess,) = h.starts(ReplyKind.ANSWER)
    h.feed(TranscriptUpdate("Check my bill.", is_final=True, from_finalize=True))
    assert CancelReply(guess.reply_id) in h.commands
    assert h.starts(ReplyKind.ANSWER)[-1].messages[-1].content == "Check my bill."


def test_a_guess_missing_the_last_word_does_not_end_the_turn_before_its_final() -> None:
    """The interim in hand at the pause lacks the word that promises more ("the"): the
    guess reads finished, but the quick endpoint waits for the final to say so."""
    h = Harness(stt=True, speculate_ms=150)  # the seed's timing: 500 / 250 ms endpoints
    h.speak(1400)
    h.feed(TranscriptUpdate("I would like to check", is_final=False))
    h.silence(160)
    (guess,) = h.starts(ReplyKind.ANSWER)
    h.answer(guess, "Sure, checking.")
    h.silence(140)  # 300 ms: past the quick endpoint, the final not in yet
    h.feed(TranscriptUpdate("I would like to check the", is_final=True, from_finalize=True))
    h.silence(100)  # a 400 ms pause
    assert h.engine.phase is Phase.USER_SPEAKING and h.line.audio_frames == 0
    h.speak(1000)  # the caller goes on
    h.feed(TranscriptUpdate("balance on my account.", is_final=True))
    h.silence(300)
    answer = h.starts(ReplyKind.ANSWER)[-1]
    assert answer.messages[-1].content == "I would like to check the balance on my account."
    assert _user_turns(h) == ["I would like to check the balance on my account."]


def test_a_confirmed_guess_still_takes_the_quick_endpoint() -> None:
    h = Harness(stt=True, speculate_ms=150)
    h.speak(800)
    h.feed(TranscriptUpdate("what is my balance", is_final=False))
    h.silence(160)
    (guess,) = h.starts(ReplyKind.ANSWER)
    h.answer(guess, "Sure.")
    h.silence(100)
    h.feed(TranscriptUpdate("What is my balance?", is_final=True, from_finalize=True))
    waited = h.wait_until(lambda: h.line.audio_frames > 0)
    assert waited <= 40 and h.starts(ReplyKind.ANSWER) == [guess]
