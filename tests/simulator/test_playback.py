"""The playback-buffer model: real-time play, marks, clear, underruns (manual clock)."""

from __future__ import annotations

import pytest

from callbridge.clock import ManualClock
from callbridge.simulator.playback import (
    ALL_AUDIBLE,
    NONE_AUDIBLE,
    AudioPlayed,
    BotSpeechEnded,
    BotSpeechStarted,
    MarkEchoed,
    PlaybackBuffer,
    PlaybackEvent,
    Underrun,
    audible_frames,
    frame_count,
)
from callbridge.simulator.voice import is_audible

FRAME = b"\x10" * 160  # 20 ms of μ-law
TONE = bytes([0x20, 0xA0] * 80)  # 20 ms, loud
HUSH = b"\xff" * 160  # 20 ms of digital silence


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


def played_bytes(events: list[object]) -> int:
    return sum(len(e.ulaw) for e in events if isinstance(e, AudioPlayed))


def test_audio_plays_in_real_time_not_faster(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    events = buf.receive_media(FRAME * 10, audible_frames=ALL_AUDIBLE)  # 200 ms sent ahead at once
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
    buf.receive_media(FRAME * 5, audible_frames=ALL_AUDIBLE)  # 100 ms
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
    buf.receive_media(FRAME * 10, audible_frames=ALL_AUDIBLE)
    buf.receive_mark("a")
    buf.receive_media(FRAME * 10, audible_frames=ALL_AUDIBLE)
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
    buf.receive_media(FRAME, audible_frames=ALL_AUDIBLE)
    clock.advance(0.100)  # played 20 ms, then 80 ms dry
    buf.advance()
    assert buf.dry_since_s == pytest.approx(100.02)
    events = buf.receive_media(FRAME, audible_frames=ALL_AUDIBLE)
    assert events == [Underrun(pytest.approx(100.02), pytest.approx(80.0))]
    assert buf.underruns == 1 and buf.underrun_ms == pytest.approx(80.0)
    assert buf.speaking


def test_long_dry_spell_ends_the_reply_without_underrun(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock, reply_gap_ms=500)
    buf.receive_media(FRAME, audible_frames=ALL_AUDIBLE)
    clock.advance(0.600)
    events = buf.advance()
    assert events[-1] == BotSpeechEnded(pytest.approx(100.02), cleared=False)
    clock.advance(1.0)
    events = buf.receive_media(FRAME, audible_frames=ALL_AUDIBLE)
    assert events == [] and buf.underruns == 0
    clock.advance(0.020)
    assert isinstance(buf.advance()[0], BotSpeechStarted)


def test_inaudible_audio_does_not_start_a_reply(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    buf.receive_media(FRAME * 3, audible_frames=NONE_AUDIBLE)
    buf.receive_media(FRAME, audible_frames=ALL_AUDIBLE)
    clock.advance(0.080)
    events = buf.advance()
    starts = [e for e in events if isinstance(e, BotSpeechStarted)]
    assert starts == [BotSpeechStarted(pytest.approx(100.06))]
    assert buf.reply_played_ms == pytest.approx(20)


def test_audio_arriving_late_starts_playing_on_arrival(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    clock.advance(2.0)
    buf.receive_media(FRAME, audible_frames=ALL_AUDIBLE)
    clock.advance(0.010)
    events = buf.advance()
    assert events[0] == BotSpeechStarted(pytest.approx(102.0))
    assert played_bytes(events) == 80


def test_playback_is_continuous_across_many_small_advances(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    buf.receive_media(FRAME * 50, audible_frames=ALL_AUDIBLE)  # one second
    total = 0
    for _ in range(100):
        clock.advance(0.007)
        total += played_bytes(buf.advance())
    assert total == 5600  # 700 ms, no sample lost to rounding


# ------------------------------------------------------------ audibility per 20 ms slice


def heard(buf: PlaybackBuffer, ulaw: bytes) -> list[PlaybackEvent]:
    return buf.receive_media(ulaw, audible_frames=audible_frames(ulaw, is_audible))


def test_slices_are_judged_one_by_one_and_a_partial_tail_on_its_own() -> None:
    assert audible_frames(HUSH + TONE + HUSH + TONE + TONE, is_audible) == 0b11010
    assert audible_frames(TONE + HUSH, is_audible) == 0b01
    assert audible_frames(HUSH + TONE[:80], is_audible) == 0b10
    assert audible_frames(TONE + HUSH[:80], is_audible) == 0b01
    assert audible_frames(TONE, is_audible) == 1 and audible_frames(HUSH, is_audible) == 0
    assert audible_frames(b"", is_audible) == 0
    assert [frame_count(n) for n in (0, 1, 160, 161, 320, 400)] == [0, 1, 1, 2, 2, 3]


def test_a_40_ms_message_of_silence_then_speech_is_heard_from_its_second_frame(
    clock: ManualClock,
) -> None:
    buf = PlaybackBuffer(clock)
    heard(buf, HUSH + TONE)
    clock.advance(0.040)
    events = buf.advance()
    assert events == [
        AudioPlayed(100.0, HUSH, audible=False),
        BotSpeechStarted(pytest.approx(100.02)),
        AudioPlayed(pytest.approx(100.02), TONE, audible=True),
    ]
    assert buf.reply_played_ms == pytest.approx(20)


def test_the_speech_start_is_the_slice_boundary_however_playback_is_polled(
    clock: ManualClock,
) -> None:
    buf = PlaybackBuffer(clock)
    heard(buf, HUSH + TONE + HUSH[:80])  # 50 ms: silence, speech, a partial silent tail
    events: list[PlaybackEvent] = []
    for _ in range(10):
        clock.advance(0.007)
        events += buf.advance()
    starts = [e for e in events if isinstance(e, BotSpeechStarted)]
    assert starts == [BotSpeechStarted(pytest.approx(100.02))]
    played = [e for e in events if isinstance(e, AudioPlayed)]
    by_byte = b"".join(bytes([e.audible]) * len(e.ulaw) for e in played)
    assert by_byte == b"\x00" * 160 + b"\x01" * 160 + b"\x00" * 80


def test_speech_then_silence_is_audible_and_only_its_speech_counts_as_heard(
    clock: ManualClock,
) -> None:
    buf = PlaybackBuffer(clock)
    heard(buf, TONE + HUSH)
    clock.advance(0.040)
    events = buf.advance()
    assert events == [
        BotSpeechStarted(100.0),
        AudioPlayed(100.0, TONE, audible=True),
        AudioPlayed(pytest.approx(100.02), HUSH, audible=False),
    ]
    assert buf.speaking


def test_a_silent_tail_slice_after_silence_does_not_start_a_reply(clock: ManualClock) -> None:
    buf = PlaybackBuffer(clock)
    heard(buf, HUSH + HUSH[:80])
    clock.advance(0.100)
    assert not any(isinstance(e, BotSpeechStarted) for e in buf.advance())
    heard(buf, HUSH + TONE[:80])  # a loud partial tail is heard
    clock.advance(0.100)
    starts = [e for e in buf.advance() if isinstance(e, BotSpeechStarted)]
    assert starts == [BotSpeechStarted(pytest.approx(100.12))]
