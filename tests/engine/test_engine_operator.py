"""Operator events: the server ends a call (drain timeout, API) or makes the bot speak."""

from __future__ import annotations

from engine_harness import Harness

from callbridge.engine.config import Script
from callbridge.engine.events import (
    CancelReply,
    Hangup,
    Phase,
    RecordEvent,
    RecordTurn,
    ReplyKind,
    SendClear,
)
from callbridge.engine.transport import EndCall, SayText

GREETING = "Hello there, thanks for calling us today, how can I help you?"


def _greeting_playing() -> Harness:
    h = Harness(script=Script(first_message=GREETING, end_call_message="Goodbye."))
    h.answer_latest()
    h.silence(300)  # 3 of 11 words heard
    assert h.engine.phase is Phase.GREETING
    return h


def test_end_call_over_the_bot_clears_records_and_says_the_message() -> None:
    h = _greeting_playing()
    h.feed(EndCall("drain", "We are closing now."))
    assert h.count(SendClear) == 1 and h.count(CancelReply) == 1
    greeting = [c.turn for c in h.commands if isinstance(c, RecordTurn)]
    assert len(greeting) == 1 and greeting[0].interrupted
    assert 0 < len((greeting[0].heard_text or "").split()) < len(GREETING.split())
    events = [c.event for c in h.commands if isinstance(c, RecordEvent)]
    assert [e.kind for e in events] == ["end_requested"]
    assert events[0].data == {"reason": "drain"}
    goodbye = h.starts(ReplyKind.GOODBYE)[-1]
    assert goodbye.text == "We are closing now."
    h.answer_latest()
    assert not h.hung_up()  # only once the goodbye has played
    h.wait_until(h.hung_up, max_ms=3000)
    assert h.engine.phase is Phase.ENDED


def test_end_call_without_a_message_uses_the_assistants_goodbye() -> None:
    h = _greeting_playing()
    h.feed(EndCall("drain"))
    assert h.starts(ReplyKind.GOODBYE)[-1].text == "Goodbye."


def test_end_call_with_an_empty_message_hangs_up_at_once() -> None:
    h = Harness()
    h.silence(100)
    h.feed(EndCall("api", ""))
    assert h.hung_up() and h.engine.phase is Phase.ENDED
    assert [c.reason for c in h.commands if isinstance(c, Hangup)] == ["ended"]


def test_a_second_end_call_while_ending_changes_nothing() -> None:
    h = _greeting_playing()
    h.feed(EndCall("drain", "Bye."))
    before = len(h.commands)
    h.feed(EndCall("api", ""))
    assert len(h.commands) == before and not h.hung_up()


def test_say_text_while_listening_speaks_at_once() -> None:
    h = Harness()
    h.silence(100)
    h.feed(SayText("Your order has shipped."))
    (announcement,) = h.starts(ReplyKind.ANNOUNCEMENT)
    assert announcement.text == "Your order has shipped."
    h.answer_latest()
    h.wait_until(lambda: h.engine.phase is Phase.LISTENING)
    turns = [c.turn for c in h.commands if isinstance(c, RecordTurn)]
    assert [(t.kind, t.text, t.interrupted) for t in turns] == [
        ("announcement", "Your order has shipped.", False)
    ]


def test_say_text_while_the_bot_speaks_waits_for_its_pause() -> None:
    h = _greeting_playing()
    h.feed(SayText("One more thing."))
    assert h.starts(ReplyKind.ANNOUNCEMENT) == []  # the greeting is not cut
    h.wait_until(lambda: bool(h.starts(ReplyKind.ANNOUNCEMENT)))
    assert h.count(SendClear) == 0
    assert h.starts(ReplyKind.ANNOUNCEMENT)[0].text == "One more thing."
