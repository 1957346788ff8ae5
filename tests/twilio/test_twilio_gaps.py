"""Gap detection by Twilio's timestamps and by arrival time, with a manual clock."""

from __future__ import annotations

from callbridge.clock import ManualClock
from callbridge.twilio.gaps import GapDetector


def test_steady_20ms_stream_has_no_gaps() -> None:
    clock = ManualClock()
    gaps = GapDetector(now=clock.now)
    for i in range(100):
        assert gaps.observe(i * 20) == []
        clock.advance(0.02)
    assert (gaps.frames, gaps.timestamp_gaps, gaps.arrival_gaps) == (100, 0, 0)


def test_missing_audio_at_the_source_is_a_timestamp_gap() -> None:
    clock = ManualClock()
    gaps = GapDetector(now=clock.now)
    gaps.observe(0)
    clock.advance(0.02)
    assert gaps.observe(20) == []
    clock.advance(0.02)
    [gap] = gaps.observe(260)  # 220 ms of audio never came, but arrival was on time
    assert (gap.kind, gap.gap_ms, gap.at_timestamp_ms) == ("timestamp", 240.0, 260)
    assert gaps.timestamp_gaps == 1 and gaps.arrival_gaps == 0


def test_late_delivery_is_an_arrival_gap() -> None:
    clock = ManualClock()
    gaps = GapDetector(now=clock.now)
    gaps.observe(0)
    clock.advance(0.25)  # the network held frames back; they come as a burst
    [gap] = gaps.observe(20)
    assert gap.kind == "arrival"
    assert round(gap.gap_ms) == 250
    for ts in (40, 60, 80):
        assert gaps.observe(ts) == []
    assert gaps.summary()["max_arrival_gap_ms"] == 250.0


def test_threshold_is_exclusive_and_reordering_is_counted() -> None:
    clock = ManualClock()
    gaps = GapDetector(now=clock.now)
    gaps.observe(0)
    clock.advance(0.1)
    assert gaps.observe(100) == []  # exactly 100 ms is not a gap
    assert gaps.observe(80) == []  # a late frame
    assert gaps.reordered == 1
    assert gaps.observe(120) == []  # measured from the newest timestamp, 100


def test_frames_without_timestamps_still_count_arrival() -> None:
    clock = ManualClock()
    gaps = GapDetector(now=clock.now)
    gaps.observe(None)
    clock.advance(0.5)
    assert [g.kind for g in gaps.observe(None)] == ["arrival"]


def test_a_gap_on_every_frame_is_reported_once_a_second_and_all_are_counted() -> None:
    clock = ManualClock()
    gaps = GapDetector(now=clock.now)
    reports = []
    for i in range(150):  # frames 1/32 s apart whose timestamps jump 200 ms each
        reports += gaps.observe(i * 200)
        clock.advance(1 / 32)
    assert gaps.timestamp_gaps == 149  # every one counted
    assert [(g.at_timestamp_ms, g.coalesced) for g in reports] == [
        (200, 0),  # frame 1
        (6_600, 31),  # frame 33, one second later, stands for frames 2..32
        (13_000, 31),
        (19_400, 31),
        (25_800, 31),  # frame 129
    ]
    clock.advance(1.0)
    late, pause = gaps.observe(150 * 200 + 200)  # a quiet second later
    assert (late.kind, late.coalesced) == ("timestamp", 20)  # frames 130..149
    assert (pause.kind, pause.coalesced) == ("arrival", 0)


def test_seen_is_observe_with_the_arrival_read_by_the_caller() -> None:
    clock = ManualClock()
    by_clock, by_caller = GapDetector(now=clock.now), GapDetector(now=lambda: -1.0)
    steps = [(0, 0.0), (20, 0.02), (400, 0.04), (420, 0.3), (60, 0.32), (440, 2.0)]
    for timestamp_ms, at in steps:
        clock.advance(at - clock.now())
        assert list(by_caller.seen(timestamp_ms, at)) == by_clock.observe(timestamp_ms)
    assert by_caller.summary() == by_clock.summary()
    assert by_caller.seen(460, 2.02) == ()  # nothing due: no list made
