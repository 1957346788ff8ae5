"""The playback-buffer model: real-time play, marks, clear, underruns (manual clock)."""

from __future__ import annotations

import pytest

from callbridge.clock import ManualClock
from callbridge.simulator.playback import (
    AudioPlayed,
    BotSpeechEnded,
    BotSpeechStarted,
    MarkEchoed,
    PlaybackBuffer,
    Underrun,
)

FRAME = b"\x10" * 160  # 20 ms of μ-law


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


def played_bytes(events: list[object]) -> int:
    return sum(len(e.ulaw) for e in events if isinstance(e, AudioPlayed))


def test_audio_plays_in_real_time_not_faster(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    events = buf.receive_media(FRAME * 10, audible=True)  # 200 ms sent ahead at once
    assert events == []
    assert buf.buffered_ms == pytest.approx(200)
    clock.advance(0.050)
    events = buf.advance()
    assert isinstance(events[0], BotSpeechStarted) and events[0].at_s == pytest.approx(100.0)
    assert played_bytes(events) == 400  # 50 ms at 8 bytes/ms
    assert buf.buffered_ms == pytest.approx(150)
    assert buf.speaking


def test_mark_echoes_only_when_playback_reaches_it(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    buf.receive_media(FRAME * 5, audible=True)  # 100 ms
    assert buf.receive_mark("seg-1") == []
    clock.advance(0.099)
    assert not any(isinstance(e, MarkEchoed) for e in buf.advance())
    clock.advance(0.002)
    marks = [e for e in buf.advance() if isinstance(e, MarkEchoed)]
    assert marks == [MarkEchoed("seg-1", pytest.approx(100.1), cleared=False)]


def test_mark_with_nothing_buffered_echoes_at_once(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    assert buf.receive_mark("m") == [MarkEchoed("m", 100.0, cleared=False)]


def test_clear_drops_audio_and_echoes_pending_marks_at_once(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    buf.receive_media(FRAME * 10, audible=True)
    buf.receive_mark("a")
    buf.receive_media(FRAME * 10, audible=True)
    buf.receive_mark("b")
    clock.advance(0.060)
    events = buf.receive_clear()
    assert played_bytes(events) == 480
    echoed = [e for e in events if isinstance(e, MarkEchoed)]
    assert [(e.name, e.cleared, e.at_s) for e in echoed] == [
        ("a", True, pytest.approx(100.06)),
        ("b", True, pytest.approx(100.06)),
    ]
    assert events[-1] == BotSpeechEnded(pytest.approx(100.06), cleared=True)
    assert buf.cleared_bytes == 3200 - 480
    assert buf.buffered_ms == 0 and not buf.speaking
    clock.advance(1.0)
    assert buf.advance() == []  # nothing left to play after clear


def test_short_dry_spell_inside_a_reply_is_an_underrun(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock, reply_gap_ms=500)
    buf.receive_media(FRAME, audible=True)
    clock.advance(0.100)  # played 20 ms, then 80 ms dry
    buf.advance()
    assert buf.dry_since_s == pytest.approx(100.02)
    events = buf.receive_media(FRAME, audible=True)
    assert events == [Underrun(pytest.approx(100.02), pytest.approx(80.0))]
    assert buf.underruns == 1 and buf.underrun_ms == pytest.approx(80.0)
    assert buf.speaking


def test_long_dry_spell_ends_the_reply_without_underrun(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock, reply_gap_ms=500)
    buf.receive_media(FRAME, audible=True)
    clock.advance(0.600)
    events = buf.advance()
    assert events[-1] == BotSpeechEnded(pytest.approx(100.02), cleared=False)
    clock.advance(1.0)
    events = buf.receive_media(FRAME, audible=True)
    assert events == [] and buf.underruns == 0
    clock.advance(0.020)
    assert isinstance(buf.advance()[0], BotSpeechStarted)


def test_inaudible_audio_does_not_start_a_reply(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    buf.receive_media(FRAME * 3, audible=False)
    buf.receive_media(FRAME, audible=True)
    clock.advance(0.080)
    events = buf.advance()
    starts = [e for e in events if isinstance(e, BotSpeechStarted)]
    assert starts == [BotSpeechStarted(pytest.approx(100.06))]
    assert buf.reply_played_ms == pytest.approx(20)


def test_audio_arriving_late_starts_playing_on_arrival(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    clock.advance(2.0)
    buf.receive_media(FRAME, audible=True)
    clock.advance(0.010)
    events = buf.advance()
    assert events[0] == BotSpeechStarted(pytest.approx(102.0))
    assert played_bytes(events) == 80


def test_playback_is_continuous_across_many_small_advances(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    buf.receive_media(FRAME * 50, audible=True)  # one second
    total = 0
    for _ in range(100):
        clock.advance(0.007)
        total += played_bytes(buf.advance())
    assert total == 5600  # 700 ms, no sample lost to rounding
