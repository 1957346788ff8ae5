"""The play-head model: real-time play from arrival, back to back, and clear."""

from __future__ import annotations

import pytest

from callbridge.audio.playhead import PlayHead


def test_audio_plays_on_arrival_when_the_player_is_dry() -> None:
    head = PlayHead(0.0)
    assert head.queue(5.0, 0.02) == 5.0
    assert head.end == pytest.approx(5.02)


def test_audio_sent_ahead_plays_after_what_is_queued() -> None:
    head = PlayHead(0.0)
    head.queue(1.0, 0.2)
    assert head.queue(1.05, 0.02) == pytest.approx(1.2)
    assert head.ahead(1.1) == pytest.approx(0.12)
    assert head.ahead(2.0) == 0.0  # played out: dry


def test_clear_drops_what_has_not_played() -> None:
    head = PlayHead(0.0)
    head.queue(1.0, 0.5)
    assert head.clear(1.2) == pytest.approx(0.3)
    assert head.queue(1.2, 0.02) == 1.2  # the next audio plays at once
    assert head.clear(9.0) == 0.0  # nothing was left


def test_whole_samples_stay_whole() -> None:
    head = PlayHead(0)
    assert head.queue(100, 160) == 100
    assert head.queue(120, 160) == 260
    unplayed = head.clear(300)
    assert (unplayed, head.end) == (120, 300)
    assert all(isinstance(v, int) for v in (unplayed, head.end, head.ahead(310)))
