"""The replay plan and the audio-measured turns, on synthetic stereo tracks (no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.audio import levels
from callbridge.simulator.replay_track import (
    FRAME_SAMPLES,
    Press,
    Speak,
    Track,
    caller_turns,
    plan_replay,
    split_stereo,
)

RATE = 8000


def _track(seconds: float, caller: list[tuple[float, float]], bot: list[tuple[float, float]]
           ) -> Track:
    """Tones where each leg 'speaks' ((start s, end s) spans), digital silence elsewhere."""
    n = int(seconds * RATE)
    legs = []
    for spans in (caller, bot):
        leg = np.zeros(n, dtype="<i2")
        for start, end in spans:
            a, b = int(start * RATE), int(end * RATE)
            tone = np.frombuffer(levels.tone(300.0, round((end - start) * 1000), -20.0, RATE),
                                 dtype="<i2")
            leg[a : a + len(tone)] = tone[: b - a]
        legs.append(leg)
    stereo = np.stack(legs, axis=1).astype("<i2").tobytes()
    return split_stereo(stereo)


def test_split_stereo_keeps_left_as_caller_and_pads_to_whole_frames() -> None:
    stereo = np.array([[1000, -5], [2000, -6], [3000, -7]], dtype="<i2").tobytes()
    track = split_stereo(stereo)
    assert track.caller[:3].tolist() == [1000, 2000, 3000]
    assert track.bot[:3].tolist() == [-5, -6, -7]
    assert len(track.caller) == FRAME_SAMPLES and not track.caller[3:].any()


def test_latency_is_caller_end_to_the_first_audible_bot_sample() -> None:
    # Caller 1.0–2.0 s, bot answers 2.4–3.4 s; caller again 4.0–4.6 s, bot 5.0–5.5 s.
    track = _track(6.0, caller=[(1.0, 2.0), (4.0, 4.6)], bot=[(2.4, 3.4), (5.0, 5.5)])
    turns = caller_turns(track)
    assert [round(t.onset_s, 2) for t in turns] == [1.0, 4.0]
    # The last audible caller frame starts at 1.98 s: 2.40 − 1.98 = 420 ms.
    assert turns[0].latency_ms == pytest.approx(420.0, abs=1.0)
    assert turns[1].latency_ms == pytest.approx(5000 - 4580, abs=1.0)
    assert not any(t.over_bot for t in turns)


def test_speech_over_the_bot_and_an_unanswered_turn() -> None:
    # The caller starts at 2.8 s while the bot speaks (2.4–3.4 s), and nothing answers.
    track = _track(5.0, caller=[(1.0, 2.0), (2.8, 3.2)], bot=[(2.4, 3.4)])
    first, second = caller_turns(track)
    assert first.latency_ms == pytest.approx(420.0, abs=1.0)
    assert second.over_bot and second.latency_ms is None


def test_a_pause_shorter_than_the_gap_stays_inside_one_turn() -> None:
    track = _track(4.0, caller=[(0.5, 1.0), (1.3, 1.8)], bot=[(2.5, 3.0)])
    assert len(caller_turns(track, gap_ms=600)) == 1
    assert len(caller_turns(track, gap_ms=200)) == 2


def test_plan_replays_every_caller_frame_in_order_at_its_place() -> None:
    track = _track(6.0, caller=[(1.0, 2.0), (4.0, 4.6)], bot=[(2.4, 3.4)])
    plan = plan_replay(track, [(3000, "5")])
    speaks = [a for a in plan.actions if isinstance(a, Speak)]
    presses = [a for a in plan.actions if isinstance(a, Press)]
    assert [s.frame for s in speaks] == [0, 100]  # the second piece starts after 2.0 s
    assert sum(len(s.utterance.frames) for s in speaks) == plan.end_frame == 300
    assert presses == [Press(150, "5")]
    # Each piece's voiced span is where the caller spoke: 1.0 s and 4.0 s on the line.
    assert [s.frame + (s.utterance.onset_index or 0) for s in speaks] == [50, 200]
    assert plan.removed_ms == 0


def test_speed_shortens_only_the_dead_air() -> None:
    # Dead air before the second utterance: bot ends 3.4 s, caller starts 4.0 s (600 ms).
    track = _track(6.0, caller=[(1.0, 2.0), (4.0, 4.6)], bot=[(2.4, 3.4)])
    plan = plan_replay(track, [(4300, "1")], speed=3.0)
    speaks = [a for a in plan.actions if isinstance(a, Speak)]
    # Before the first words: 1.0 s of silence → 333 ms (−33 frames); before the second:
    # 600 ms → 200 ms (−20 frames); the 1.4 s before the hang-up → 466 ms (−46 frames).
    # The bot's reply and the caller's words are untouched; the press, inside the
    # caller's words, moves with them.
    assert plan.removed_ms == (33 + 20 + 46) * 20
    assert plan.end_frame == 300 - 99
    assert speaks[0].frame + (speaks[0].utterance.onset_index or 0) == 50 - 33
    assert speaks[1].frame + (speaks[1].utterance.onset_index or 0) == 200 - 53
    voiced = [s.utterance.end_index - s.utterance.onset_index for s in speaks]  # type: ignore[operator]
    assert voiced == [49, 29]
    press = next(a for a in plan.actions if isinstance(a, Press))
    assert press.frame == 215 - 53


def test_speed_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="speed"):
        plan_replay(_track(1.0, [(0.2, 0.5)], []), speed=0.5)
