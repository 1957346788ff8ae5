"""Backchannels and false interruptions (issue 16), on the engine with a manual clock."""

from __future__ import annotations

import pytest
from engine_harness import Harness
from pydantic import ValidationError

from callbridge.assistant import AssistantConfig, TurnTaking
from callbridge.engine.backchannel import BackchannelJudge
from callbridge.engine.events import (
    CallEvent,
    CancelReply,
    Phase,
    RecordEvent,
    RecordTurn,
    ReplyKind,
    SendClear,
    StartReply,
    TurnRecord,
)
from callbridge.engine.transport import CallerDtmf
from callbridge.providers.base import TranscriptUpdate

EXPLANATION = (
    "Your plan renews on the first of the month.",
    "The price stays the same for the first year.",
    "After that it follows the list price, which we email you about in advance.",
)


def _events(h: Harness, kind: str) -> list[CallEvent]:
    return [c.event for c in h.commands if isinstance(c, RecordEvent) and c.event.kind == kind]


def _turns(h: Harness, kind: str | None = None) -> list[TurnRecord]:
    turns = [c.turn for c in h.commands if isinstance(c, RecordTurn)]
    return [t for t in turns if kind is None or t.kind == kind]


def _bot_explaining(h: Harness, *sentences: str) -> StartReply:
    """The caller asks; the bot answers with ``sentences`` and is speaking."""
    h.speak(400)
    h.feed(TranscriptUpdate("how does renewal work", is_final=False))
    h.feed(TranscriptUpdate("how does renewal work", is_final=True))
    h.wait_until(lambda: h.engine.phase is Phase.THINKING)
    request = h.answer_latest(*(sentences or EXPLANATION))
    h.silence(100)
    assert h.engine.phase is Phase.BOT_SPEAKING
    return request


def _live(h: Harness, kind: ReplyKind) -> list[StartReply]:
    cancelled = {c.reply_id for c in h.commands if isinstance(c, CancelReply)}
    return [s for s in h.starts(kind) if s.reply_id not in cancelled]


# ------------------------------------------------------------------ the judge


def test_the_judge_takes_backchannels_and_nothing_else() -> None:
    judge = BackchannelJudge(["uh-huh", "mm-hm", "yeah", "okay", "right", "i see"])
    for said in ("uh-huh", "Uh huh.", "Mm-hm", "yeah yeah", "Okay.", "right", "I see"):
        assert judge.judge(said), said
    for said in ("", "no wait", "stop", "right?", "okay but why", "yeah, what about fees"):
        assert not judge.judge(said), said


def test_the_list_is_per_language_with_a_region_falling_back() -> None:
    table = {"en": ("okay",), "es": ("vale",)}
    assert BackchannelJudge.for_language(table, "es").judge("Vale.")
    assert not BackchannelJudge.for_language(table, "es").judge("okay")
    assert BackchannelJudge.for_language(table, "en-US").judge("okay")
    assert not BackchannelJudge.for_language(table, "pt").enabled


# ------------------------------------------------------------------ backchannels


def test_uh_huh_twice_does_not_stop_the_bot_and_is_kept_not_answered() -> None:
    h = Harness(stt=True)
    _bot_explaining(h)
    for _ in range(2):
        h.speak(100)
        h.feed(TranscriptUpdate("uh", is_final=False))
        h.speak(100)
        h.feed(TranscriptUpdate("uh-huh", is_final=False))
        h.speak(200)
        h.silence(200)
        h.feed(TranscriptUpdate("Uh-huh.", is_final=True))
        h.silence(600)
        assert h.count(SendClear) == 0
        assert h.engine.phase is Phase.BOT_SPEAKING
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    backchannels = _turns(h, "backchannel")
    assert [t.text for t in backchannels] == ["Uh-huh.", "Uh-huh."]
    assert all(t.role == "user" for t in backchannels)
    assert len(_events(h, "backchannel")) == 2
    reply = _turns(h, "answer")[-1]
    assert not reply.interrupted and reply.heard_text == " ".join(EXPLANATION)
    # Not answered: the bot listens, and the backchannel is not in the next turn's words.
    h.silence(1000)
    assert len(h.starts(ReplyKind.ANSWER)) == 1
    h.speak(400)
    h.feed(TranscriptUpdate("thanks", is_final=True))
    h.wait_until(lambda: h.engine.phase is Phase.THINKING)
    messages = h.starts(ReplyKind.ANSWER)[-1].messages
    assert [m.content for m in messages if m.role == "user"] == [
        "how does renewal work",
        "thanks",
    ]


def test_a_real_interruption_clears_on_its_first_word() -> None:
    for words in ("no wait", "stop", "right?", "what about fees"):
        h = Harness(stt=True)
        _bot_explaining(h)
        h.speak(160)
        assert h.count(SendClear) == 0  # no words yet: it may be "uh-huh" or a cough
        h.speak(60)
        h.feed(TranscriptUpdate(words, is_final=False))
        assert h.count(SendClear) == 1, words  # the same instant its words arrive
        assert h.engine.phase is Phase.USER_SPEAKING


def test_a_backchannel_that_turns_into_words_clears_at_the_first_real_word() -> None:
    h = Harness(stt=True)
    _bot_explaining(h)
    h.speak(240)
    h.feed(TranscriptUpdate("okay", is_final=False))
    h.speak(100)
    assert h.count(SendClear) == 0
    h.feed(TranscriptUpdate("okay", is_final=True))  # a final mid-run, still a backchannel
    h.speak(100)
    h.feed(TranscriptUpdate("so", is_final=False))
    assert h.count(SendClear) == 1
    [barge_in] = _events(h, "barge_in")
    assert barge_in.data["reaction_ms"] < 800  # within backchannelMaxMs of its onset


def test_speech_the_transcriber_is_slow_on_stops_the_bot_after_backchannel_max_ms() -> None:
    h = Harness(stt=True, backchannel_max_ms=600)
    _bot_explaining(h)
    h.speak(580)  # no interim of this speech yet: it is long enough to be talk
    assert h.count(SendClear) == 0
    h.speak(20)
    assert h.count(SendClear) == 1


def test_a_cough_with_no_words_does_not_stop_the_bot() -> None:
    h = Harness(stt=True)
    _bot_explaining(h)
    h.speak(300)
    h.silence(500)
    assert h.count(SendClear) == 0
    assert h.engine.phase is Phase.BOT_SPEAKING


def test_without_a_transcriber_barge_in_stays_the_vads() -> None:
    h = Harness()
    h.speak(400)
    h.silence(520)
    h.answer_latest(*EXPLANATION)
    h.silence(100)
    h.speak(200)
    assert h.count(SendClear) == 1  # 200 ms of sound, no words needed (or coming)
    h.silence(2000)
    assert not h.starts(ReplyKind.RESUMPTION)


def test_backchannel_filter_off_keeps_vad_speed() -> None:
    h = Harness(stt=True, backchannel_max_ms=0)
    _bot_explaining(h)
    h.feed(TranscriptUpdate("", is_final=False))
    h.speak(200)
    assert h.count(SendClear) == 1


# ------------------------------------------------------------------ false interruptions


def _interrupt_mid_sentence(h: Harness) -> StartReply:
    """A finals-only transcriber (no interims): the VAD stops the bot, words come later.
    The caller hears segment 1 (4 words) and 4 words of segment 2, then a sound."""
    h.speak(400)
    h.silence(300)
    h.feed(TranscriptUpdate("tell me", is_final=True))
    h.wait_until(lambda: h.engine.phase is Phase.THINKING)
    request = h.answer_latest("One two three four.", "Five six seven eight nine ten.")
    h.silence(400 + 60)
    h.silence(200)
    h.speak(200)
    assert h.count(SendClear) == 1
    heard = _turns(h, "answer")[-1].heard_text
    assert heard == "One two three four. Five six seven eight", heard
    return request


def test_a_sound_with_no_words_resumes_from_the_first_unheard_word() -> None:
    h = Harness(stt=True, resume_message="As I was saying,")
    _interrupt_mid_sentence(h)
    barged = h.clock.now()
    h.wait_until(lambda: bool(h.starts(ReplyKind.RESUMPTION)))
    assert 1.0 <= h.clock.now() - barged <= 1.0 + 0.021  # falseInterruptionMs after it
    [resumption] = h.starts(ReplyKind.RESUMPTION)
    assert resumption.text == "As I was saying, nine ten."
    assert _events(h, "false_interruption")[0].data["words"] == 0
    assert _events(h, "resumed")[0].data == {"from_word": 8, "words": 2}
    assert len(h.starts(ReplyKind.ANSWER)) == 1  # the sound itself is not answered
    assert [t.text for t in _turns(h) if t.role == "user"] == ["tell me"]
    h.answer_latest()
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    resumed = _turns(h, "resumption")[-1]
    assert resumed.text == "As I was saying, nine ten."
    assert not resumed.interrupted
    h.speak(400)
    h.feed(TranscriptUpdate("ok thanks bye", is_final=True))
    h.wait_until(lambda: h.engine.phase is Phase.THINKING)
    assistant = [m.content for m in h.starts()[-1].messages if m.role == "assistant"]
    assert assistant == [
        "One two three four. Five six seven eight As I was saying, nine ten."
    ]


def test_an_okay_that_stopped_the_bot_resumes_it_and_is_kept_as_a_backchannel() -> None:
    h = Harness(stt=True)
    _interrupt_mid_sentence(h)
    h.silence(300)
    h.feed(TranscriptUpdate("Okay.", is_final=True))
    h.silence(100)
    [resumption] = h.starts(ReplyKind.RESUMPTION)
    assert resumption.text == "nine ten."
    assert [t.text for t in _turns(h, "backchannel")] == ["Okay."]
    assert _events(h, "false_interruption")[0].data["backchannel"] == "Okay."
    assert len(h.starts(ReplyKind.ANSWER)) == 1  # only the first question's


def test_words_within_the_window_cancel_the_resumption() -> None:
    h = Harness(stt=True)
    _interrupt_mid_sentence(h)
    h.speak(300)
    h.feed(TranscriptUpdate("no I meant the other plan", is_final=True))
    h.silence(1500)
    assert not h.starts(ReplyKind.RESUMPTION)
    assert _events(h, "resume_cancelled")[0].data["reason"] == "caller_spoke"
    answer = _live(h, ReplyKind.ANSWER)[-1]
    assert answer.messages[-1].content == "no I meant the other plan"


def test_a_caller_who_speaks_as_the_bot_resumes_cancels_the_resumption() -> None:
    h = Harness(stt=True)
    _interrupt_mid_sentence(h)
    h.wait_until(lambda: bool(h.starts(ReplyKind.RESUMPTION)))
    assert h.engine.phase is Phase.THINKING
    h.speak(300)  # before its audio came: dropped unheard, the caller has the turn
    [resumption] = h.starts(ReplyKind.RESUMPTION)
    assert any(
        isinstance(c, CancelReply) and c.reply_id == resumption.reply_id for c in h.commands
    )
    assert h.engine.phase is Phase.USER_SPEAKING
    assert _events(h, "resume_cancelled")[0].data["reason"] == "caller_spoke"


def test_a_keypress_after_the_interruption_cancels_the_resumption() -> None:
    h = Harness(stt=True)
    _interrupt_mid_sentence(h)
    h.silence(200)
    h.feed(CallerDtmf("1"))
    h.silence(1500)
    assert not h.starts(ReplyKind.RESUMPTION)
    assert _events(h, "resume_cancelled")[0].data["reason"] == "dtmf"


def test_a_long_sound_waits_for_its_end_before_resuming() -> None:
    h = Harness(stt=True)
    _interrupt_mid_sentence(h)
    h.speak(1200)  # a door banging on: no words, but the caller's line is not quiet
    assert not h.starts(ReplyKind.RESUMPTION)
    h.silence(200)
    assert h.starts(ReplyKind.RESUMPTION)


def test_false_interruption_off_keeps_todays_behaviour() -> None:
    h = Harness(stt=True, false_interruption_ms=0)
    _interrupt_mid_sentence(h)
    h.silence(3000)
    assert not h.starts(ReplyKind.RESUMPTION)
    assert not _events(h, "false_interruption")


def test_an_uh_huh_whose_final_comes_after_the_bot_ended_is_not_answered() -> None:
    h = Harness(stt=True)
    _bot_explaining(h, "Short one.")
    h.speak(100)
    h.feed(TranscriptUpdate("mm", is_final=False))
    h.silence(100)
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    h.feed(TranscriptUpdate("Mm-hm.", is_final=True))
    h.silence(2000)
    assert len(h.starts(ReplyKind.ANSWER)) == 1
    assert [t.text for t in _turns(h, "backchannel")] == ["Mm-hm."]
    h.speak(400)
    h.feed(TranscriptUpdate("one more thing", is_final=True))
    h.wait_until(lambda: h.engine.phase is Phase.THINKING)
    assert h.starts(ReplyKind.ANSWER)[-1].messages[-1].content == "one more thing"


def test_backchannels_must_be_judged_before_a_barge_in_goes_stale() -> None:
    with pytest.raises(ValidationError, match="backchannelMaxMs must be below"):
        TurnTaking.model_validate({"backchannelMaxMs": 1000, "interruptMaxLagMs": 1000})
    assert TurnTaking.model_validate({"backchannelMaxMs": 0}).backchannel_max_ms == 0


def test_the_late_final_of_an_okay_does_not_cancel_the_resumption() -> None:
    h = Harness(stt=True)
    _interrupt_mid_sentence(h)
    h.feed(TranscriptUpdate("okay", is_final=False))
    h.wait_until(lambda: bool(h.starts(ReplyKind.RESUMPTION)))
    h.feed(TranscriptUpdate("Okay.", is_final=True))  # its final, after the resumption began
    [resumption] = h.starts(ReplyKind.RESUMPTION)
    assert not any(
        isinstance(c, CancelReply) and c.reply_id == resumption.reply_id for c in h.commands
    )
    assert h.engine.phase is Phase.THINKING
    assert [t.text for t in _turns(h, "backchannel")] == ["Okay."]
    assert not _events(h, "resume_cancelled")


def test_the_transcribers_language_picks_the_list_unless_turn_taking_names_one() -> None:
    spanish = AssistantConfig.model_validate({"transcriber": {"provider": "x", "language": "es"}})
    assert spanish.turns().language == "es"
    named = AssistantConfig.model_validate(
        {"transcriber": {"language": "es"}, "turnTaking": {"language": "fr"}}
    )
    assert named.turns().language == "fr"
    assert AssistantConfig.model_validate({}).turns().language == "en"


def test_the_engine_rules_carry_every_turn_taking_setting() -> None:
    """The engine takes plain rules; the config layer's fields map one to one."""
    from dataclasses import fields

    from callbridge.engine.config import TurnRules
    from callbridge.engine.runner import turn_rules

    assert {f.name for f in fields(TurnRules)} == set(TurnTaking.model_fields)
    rules = turn_rules(TurnTaking.model_validate({"endpointingMs": 800, "language": "es"}))
    assert (rules.endpointing_ms, rules.language) == (800, "es")
    assert rules.backchannels["es"]
