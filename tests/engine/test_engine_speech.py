"""Speech runs: measured in audio time, dated back over the model VAD's confirmation lag."""

from __future__ import annotations

from callbridge.engine.speech import SpeechTracker

LOUD, QUIET = -20.0, -70.0


def _feed(tracker: SpeechTracker, frames: list[tuple[bool, float]], start_ms: int = 0) -> None:
    for i, (speech, level) in enumerate(frames):
        stamp = start_ms + i * 20
        tracker.update(speech, level, 20, stamp / 1000, stamp)


def test_a_late_confirmation_counts_the_loud_frames_before_it() -> None:
    tracker = SpeechTracker()
    _feed(tracker, [(False, QUIET)] * 25)  # 500 ms of a quiet line
    # The caller starts at 500 ms; the model says "speech" only from the 4th frame on.
    _feed(tracker, [(False, LOUD)] * 3 + [(True, LOUD)], start_ms=500)
    assert tracker.run_ms == 80
    assert tracker.onset_at == 0.5


def test_the_backdate_is_capped_so_steady_noise_cannot_fake_a_long_run() -> None:
    tracker = SpeechTracker(backdate_max_ms=160)
    _feed(tracker, [(False, QUIET)] * 25)
    _feed(tracker, [(False, LOUD)] * 50 + [(True, LOUD)], start_ms=500)  # a second of noise
    assert tracker.run_ms == 20 + 160


def test_quiet_frames_before_speech_are_not_counted() -> None:
    tracker = SpeechTracker()
    _feed(tracker, [(False, QUIET)] * 25 + [(True, LOUD)])
    assert tracker.run_ms == 20


def test_a_loud_line_raises_the_floor_only_slowly() -> None:
    tracker = SpeechTracker(loud_margin_db=12.0)
    _feed(tracker, [(False, -45.0)] * 10)  # the floor starts at -60 and climbs 0.02 dB a frame
    _feed(tracker, [(True, -20.0)], start_ms=200)
    assert tracker.run_ms == 20 + 160  # -45 is still loud against a floor near -60
    steady = SpeechTracker()
    _feed(steady, [(False, -45.0)] * 1000)  # 20 s of -45 dBFS hum: it becomes the floor
    _feed(steady, [(True, -20.0)], start_ms=20_000)
    assert steady.run_ms == 20


def test_short_dips_do_not_break_a_run_but_a_gap_does() -> None:
    tracker = SpeechTracker(gap_tolerance_ms=60)
    _feed(tracker, [(True, LOUD)] * 5 + [(False, QUIET)] * 3 + [(True, LOUD)])
    assert tracker.run_ms == 180
    _feed(tracker, [(False, QUIET)] * 4, start_ms=180)
    assert tracker.run_ms == 0 and tracker.silence_ms == 80


def test_a_late_silence_verdict_counts_the_quiet_frames_before_it() -> None:
    tracker = SpeechTracker()
    _feed(tracker, [(False, QUIET)] * 25 + [(True, LOUD)] * 40)  # 800 ms of speech
    # The caller stops at 1300 ms; the model says "silence" only on the 6th quiet frame.
    _feed(tracker, [(True, QUIET)] * 5, start_ms=1300)
    assert tracker.silence_ms == 0 and tracker.run_ms > 0
    _feed(tracker, [(False, QUIET)], start_ms=1400)
    assert tracker.silence_ms == 120  # the caller's silence, not the model's 20 ms
    assert tracker.run_ms == 0


def test_the_silence_backdate_is_capped() -> None:
    tracker = SpeechTracker(backdate_max_ms=160)
    _feed(tracker, [(True, LOUD)] * 40 + [(True, QUIET)] * 30 + [(False, QUIET)])
    assert tracker.silence_ms == 160 + 20


def test_a_loud_tail_is_not_backdated() -> None:
    tracker = SpeechTracker()
    _feed(tracker, [(True, LOUD)] * 40 + [(False, LOUD)])
    assert tracker.silence_ms == 20
