"""Playout between sentences: a sentence's last partial frame is finished by the next
sentence's audio instead of being padded with silence (no inserted gap)."""

from __future__ import annotations

import pytest

from callbridge.engine.events import SendAudio, SendMark
from callbridge.engine.playout import Playout

FRAME = 160


def _frames(playout: Playout) -> list[bytes]:
    out = playout.pull(1e9)  # far in the future: everything may go
    return [c.ulaw for c in out if isinstance(c, SendAudio)]


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
