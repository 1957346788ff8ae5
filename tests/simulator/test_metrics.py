"""Turn latency, barge-in reaction, stale audio and pacing jitter, with plain numbers."""

from __future__ import annotations

import pytest

from callbridge.simulator.metrics import PacingMeter, TurnTracker, percentile


def test_turn_latency_is_speech_end_to_first_bot_audio_played() -> None:
    t = TurnTracker()
    t.speech_onset(1.0, label="hello", bot_speaking=False)
    t.bot_speech_started(1.5)  # bot talked over the caller: not the answer
    t.speech_end(2.0)
    t.bot_speech_started(2.45)
    t.bot_speech_started(3.0)  # a later reply does not overwrite the first
    (turn,) = t.turns
    assert turn.latency_ms == pytest.approx(450)
    assert not turn.barge_in


def test_barge_in_reaction_and_stale_audio() -> None:
    t = TurnTracker()
    t.speech_onset(10.0, label="stop", bot_speaking=True)
    t.audio_played(9.99, 0.02, audible=True)  # 10 ms of it after onset
    t.audio_played(10.01, 0.02, audible=True)
    t.audio_played(10.03, 0.02, audible=False)  # silence is not stale speech
    t.clear_received(10.18)
    t.audio_played(10.2, 0.02, audible=True)  # after clear: not counted here
    (turn,) = t.turns
    assert turn.barge_in
    assert turn.bargein_ms == pytest.approx(180)
    assert turn.stale_ms == pytest.approx(30)
    assert t.clears == 1


def test_barge_in_without_clear_counts_stale_until_reply_ends() -> None:
    t = TurnTracker()
    t.speech_onset(0.0, label="wait", bot_speaking=True)
    t.audio_played(0.0, 0.5, audible=True)
    t.bot_speech_ended()
    t.audio_played(1.0, 0.5, audible=True)
    assert t.turns[0].bargein_ms is None
    assert t.turns[0].stale_ms == pytest.approx(500)


def test_dtmf_turn_latency_counts_from_the_key_press() -> None:
    t = TurnTracker()
    t.dtmf_sent(5.0, "1", bot_speaking=False)
    t.bot_speech_started(5.3)
    assert t.turns[0].kind == "dtmf" and t.turns[0].latency_ms == pytest.approx(300)


def test_pacing_with_send_ahead_then_steady_pace_has_no_jitter() -> None:
    m = PacingMeter()
    arrivals = [0.0] * 10 + [0.02 * k for k in range(1, 40)]  # 200 ms burst, then paced
    jitter = [m.frame(a, 0.02) for a in arrivals]
    assert max(jitter) == pytest.approx(0.0, abs=1e-9)


def test_a_stalled_frame_shows_as_jitter_and_the_pace_recovers() -> None:
    m = PacingMeter()
    arrivals = [0.02 * k for k in range(10)]
    arrivals += [0.2 + 0.035, 0.22 + 0.02, 0.24]  # one frame 35 ms late, then back on time
    jitter = [m.frame(a, 0.02) for a in arrivals]
    assert jitter[10] == pytest.approx(35)
    assert jitter[11] == pytest.approx(20)
    assert jitter[12] == pytest.approx(0, abs=1e-9)


def test_a_pause_between_replies_is_not_jitter() -> None:
    m = PacingMeter(run_gap_ms=500)
    for k in range(5):
        m.frame(0.02 * k, 0.02)
    assert m.frame(3.0, 0.02) == 0.0
    m.restart()
    assert m.frame(3.01, 0.02) == 0.0


def test_a_new_segment_after_a_mark_sets_its_own_pace() -> None:
    m = PacingMeter()
    for _ in range(8):  # segment 1 sent ahead at once
        m.frame(0.0, 0.02)
    m.restart()  # its mark; segment 2's audio comes 60 ms later (the TTS's delay)
    jitter = [m.frame(0.06, 0.02) for _ in range(3)] + [m.frame(0.08, 0.02)]
    assert max(jitter) == pytest.approx(0.0, abs=1e-9)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
