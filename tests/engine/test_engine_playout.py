"""Playout: a sentence's last partial frame is finished by the next sentence's audio
instead of being padded with silence (no inserted gap); audio goes out two frames a
message, with marks exactly where they were and the lead never below a frame a message's."""

from __future__ import annotations

import random

import pytest
from engine_harness import BOT_WORD, Harness

from callbridge.engine.config import Script
from callbridge.engine.events import (
    Command,
    ReplyAudio,
    ReplyDone,
    ReplyKind,
    ReplySegment,
    SendAudio,
    SendClear,
    SendMark,
)
from callbridge.engine.playout import FRAMES_PER_MESSAGE, Playout

FRAME = 160


def _frames(playout: Playout) -> list[bytes]:
    """Every frame that may go (far in the future: everything), message boundaries aside."""
    audio = b"".join(c.ulaw for c in playout.pull(1e9) if isinstance(c, SendAudio))
    return [audio[i : i + FRAME] for i in range(0, len(audio), FRAME)]


def _wire(commands: list[Command]) -> list[int | str]:
    """What goes to the line: each message's length in frames, or a mark's name."""
    return [len(c.ulaw) // FRAME if isinstance(c, SendAudio) else c.name
            for c in commands if isinstance(c, SendAudio | SendMark)]


def test_the_next_sentence_finishes_the_last_partial_frame() -> None:
    playout = Playout()
    playout.begin_segment((1, 0), "One.")
    playout.add_audio((1, 0), b"\x01" * (FRAME + 90))
    playout.end_segment((1, 0), more_follows=True)
    playout.begin_segment((1, 1), "Two.")
    playout.add_audio((1, 1), b"\x02" * (FRAME + 70))
    playout.end_segment((1, 1))  # the reply's last sentence: padded once, at the very end
    frames = _frames(playout)
    audio = b"".join(frames)
    assert len(frames) == 3  # 480 bytes = 250 + 230, not 2 + 2 frames with two pads
    assert audio == b"\x01" * 250 + b"\x02" * 230
    assert all(len(f) == FRAME for f in frames)


def test_the_last_sentence_is_padded_and_marked() -> None:
    playout = Playout()
    playout.begin_segment((1, 0), "Only.")
    playout.add_audio((1, 0), b"\x01" * 100)
    playout.end_segment((1, 0))
    out = playout.pull(1e9)
    assert [type(c) for c in out] == [SendAudio, SendMark]
    first = out[0]
    assert isinstance(first, SendAudio)
    assert first.ulaw == b"\x01" * 100 + b"\xff" * 60


def test_a_clear_forgets_the_carried_bytes() -> None:
    playout = Playout()
    playout.begin_segment((1, 0), "Cut.")
    playout.add_audio((1, 0), b"\x01" * 90)
    playout.end_segment((1, 0), more_follows=True)
    playout.clear(0.0)  # barge-in
    playout.begin_segment((2, 0), "New.")
    playout.add_audio((2, 0), b"\x02" * FRAME)
    assert _frames(playout) == [b"\x02" * FRAME]


def test_a_lead_shorter_than_a_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="send_ahead_ms"):
        Playout(send_ahead_ms=10)


# ---------------------------------------------------------------- two frames a message

T0 = 100.0


def _say(playout: Playout, key: tuple[int, int], text: str, frames: int) -> None:
    playout.begin_segment(key, text)
    playout.add_audio(key, bytes([key[1] + 1]) * (FRAME * frames))
    playout.end_segment(key)


def test_a_message_carries_two_frames_and_its_bytes_in_order() -> None:
    assert FRAMES_PER_MESSAGE == 2
    playout = Playout(send_ahead_ms=200)
    playout.begin_segment((1, 0), "Hello there.")
    audio = bytes(range(256)) * 10  # 16 frames, each different
    playout.add_audio((1, 0), audio)
    out = playout.pull(T0)
    assert _wire(out) == [2] * 5  # the 200 ms lead, in five messages
    assert b"".join(c.ulaw for c in out if isinstance(c, SendAudio)) == audio[: 10 * FRAME]
    assert playout.sent_frames == 10 and playout.play_end == pytest.approx(T0 + 0.2)


def test_the_frame_before_a_mark_goes_alone_and_the_mark_right_after_it() -> None:
    playout = Playout()
    _say(playout, (1, 0), "One two three.", 3)
    _say(playout, (1, 1), "Four.", 4)
    out = playout.pull(T0)
    assert _wire(out) == [2, 1, "m1-r1s0", 2, 2, "m2-r1s1"]
    # The message before the mark holds exactly the segment's own audio.
    first, second = (c for c in out[:2] if isinstance(c, SendAudio))
    assert first.ulaw + second.ulaw == b"\x01" * (3 * FRAME)


def test_a_reply_ending_on_an_odd_frame_flushes_it_with_its_mark() -> None:
    playout = Playout()
    playout.begin_segment((1, 0), "Bye.")
    playout.add_audio((1, 0), b"\x01" * (4 * FRAME + 30))  # the fifth frame is padded
    playout.end_segment((1, 0))
    assert _wire(playout.pull(T0)) == [2, 2, 1, "m1-r1s0"]
    assert playout.all_sent() and playout.next_deadline() is None


def test_the_first_frame_of_a_reply_goes_at_once_alone() -> None:
    playout = Playout()
    playout.begin_segment((1, 0), "Hi there, how can I help?")
    playout.add_audio((1, 0), b"\x01" * FRAME)  # all the TTS has sent yet
    assert _wire(playout.pull(T0)) == [1]  # not held for a partner
    playout.add_audio((1, 0), b"\x01" * (3 * FRAME))  # 5 ms later, more audio
    assert _wire(playout.pull(T0 + 0.005)) == [2, 1]  # due at once: the lead is not full
    assert playout.play_end == pytest.approx(T0 + 0.08)


def test_a_full_lead_sends_a_message_when_its_first_frame_is_due() -> None:
    playout = Playout(send_ahead_ms=200)
    _say(playout, (1, 0), "A long sentence.", 40)
    playout.pull(T0)  # 200 ms out
    due = playout.next_deadline()
    assert due == pytest.approx(T0 + 0.02)  # when one frame has played: as before
    assert playout.pull(due - 0.001) == []
    assert _wire(playout.pull(due)) == [2]  # the frame due, and the next one 20 ms early
    assert playout.play_end - due == pytest.approx(0.22)
    assert playout.next_deadline() == pytest.approx(T0 + 0.06)


def test_a_clear_drops_every_queued_frame_and_the_next_reply_starts_afresh() -> None:
    playout = Playout()
    _say(playout, (1, 0), "Something long.", 30)
    assert _wire(playout.pull(T0)) == [2] * 5
    playout.clear(T0 + 0.05)  # barge-in: ``SendClear`` goes, then nothing of this reply
    assert playout.pull(T0 + 0.06) == [] and playout.pull(T0 + 5) == []
    playout.begin_segment((2, 0), "Yes?")
    playout.add_audio((2, 0), b"\x02" * (3 * FRAME))
    playout.end_segment((2, 0))
    out = playout.pull(T0 + 0.07)
    assert _wire(out) == [2, 1, "m2-r2s0"]
    assert all(c.ulaw.count(b"\x01") == 0 for c in out if isinstance(c, SendAudio))


def test_three_frames_a_message_when_asked() -> None:
    playout = Playout(frames_per_message=3)
    _say(playout, (1, 0), "One.", 7)
    assert _wire(playout.pull(T0)) == [3, 3, 1, "m1-r1s0"]
    with pytest.raises(ValueError, match="frames_per_message"):
        Playout(frames_per_message=0)


class _Line:
    """Twilio's side of one playout: plays in real time, echoes a mark when reached."""

    def __init__(self, playout: Playout) -> None:
        self.playout = playout
        self.play_end = 0.0
        self.marks: list[tuple[float, str]] = []
        self.messages = 0

    def take(self, commands: list[Command], now: float) -> None:
        for command in commands:
            if isinstance(command, SendAudio):
                self.play_end = max(self.play_end, now) + len(command.ulaw) / 8000
                self.messages += 1
            elif isinstance(command, SendMark):
                self.marks.append((max(self.play_end, now), command.name))

    def echo(self, now: float) -> None:
        for _, name in [m for m in self.marks if m[0] <= now + 1e-9]:
            self.playout.mark_played(name, now)  # the echo arrives on this wake-up
        self.marks = [m for m in self.marks if m[0] > now + 1e-9]


def test_pairing_keeps_the_lead_and_what_was_heard_of_a_frame_a_message() -> None:
    """The same reply, the same wake-ups (late, early, skipped): sent two frames a
    message, the far end never holds less than it did with one, at most a frame more,
    and at every moment the words heard (what a barge-in keeps) are the same."""
    rng = random.Random(13)
    one, two = Playout(frames_per_message=1), Playout()
    lines = [_Line(one), _Line(two)]
    sentences = [("Thanks for calling the clinic.", 37), ("How can I help you today?", 24),
                 ("Our hours are nine to five.", 31)]
    for playout in (one, two):
        for index, (text, frames) in enumerate(sentences):
            _say(playout, (1, index), text, frames)
    now, heard_seen = T0, set()
    while not (one.all_sent() and two.all_sent() and not any(ln.marks for ln in lines)):
        now += rng.choice((0.02, 0.02, 0.02, 0.013, 0.031, 0.04))  # the call's wake-ups
        for line in lines:
            line.echo(now)
            line.take(line.playout.pull(now), now)
        lead_one, lead_two = one.play_end - now, two.play_end - now
        assert lead_two >= lead_one - 1e-9
        assert lead_two <= lead_one + 0.02 + 1e-9
        assert two.heard_text(now) == one.heard_text(now)
        heard_seen.add(one.heard_text(now))
        assert now < T0 + 10
    assert len(heard_seen) > 10  # the words were heard one by one, not all at the end
    assert one.sent_frames == two.sent_frames == 92
    assert lines[1].messages <= lines[0].messages // 2 + len(sentences)


# ---------------------------------------------------------------- in the engine


def test_the_greetings_first_frame_leaves_with_the_event_that_brought_it() -> None:
    h = Harness(script=Script(first_message="Hello there."))
    greeting = h.starts(ReplyKind.GREETING)[0]
    h.feed(ReplySegment(greeting.reply_id, 0, "Hello there."))
    sent = len(h.commands)
    h.feed(ReplyAudio(greeting.reply_id, 0, BOT_WORD[:FRAME]))  # the TTS's first 20 ms
    assert [len(c.ulaw) for c in h.commands[sent:] if isinstance(c, SendAudio)] == [FRAME]
    h.feed(ReplyAudio(greeting.reply_id, 0, BOT_WORD[FRAME:] + BOT_WORD))  # the rest, at once
    h.feed(ReplyDone(greeting.reply_id))
    sizes = [len(c.ulaw) // FRAME for c in h.commands if isinstance(c, SendAudio)]
    assert sizes == [1, 2, 2, 2, 2, 1] and sum(sizes) == 10  # the lead, at the same instant


def test_nothing_queued_before_a_barge_in_goes_out_after_its_clear() -> None:
    h = Harness(script=Script(first_message="One two three four five six seven eight."))
    h.answer_latest()
    h.silence(200)
    assert h.count(SendAudio) > 0
    h.speak(400)  # the caller talks over it
    assert h.count(SendClear) == 1
    at = next(i for i, c in enumerate(h.commands) if isinstance(c, SendClear))
    h.silence(400)
    assert not [c for c in h.commands[at:] if isinstance(c, SendAudio | SendMark)]
