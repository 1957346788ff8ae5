"""The end-of-turn model in the engine: asked once per silence onset with the turn's
last 8 s (off the frame path: a command, answered by an event); its "not finished"
keeps the full endpoint for words that read finished; it never ends a turn earlier
than the lexical rule. Manual clock."""

from __future__ import annotations

from engine_harness import Harness

from callbridge.engine.events import JudgeTurn, Phase, TurnJudged
from callbridge.providers.base import TranscriptUpdate


def _judged(probability: float | None, after_ms: int = 0) -> tuple[Harness, int]:
    """Finished-looking words; the model (if it answers) says ``probability``, ``after_ms``
    after the silence onset."""
    h = Harness(stt=True, judge_turns=True, end_of_turn="smart-turn", speculate_ms=0)
    h.speak(800)
    h.feed(TranscriptUpdate("Check my bill.", is_final=True))
    h.silence(80)  # the run ends after the VAD's gap tolerance: the silence onset
    (asked,) = [c for c in h.commands if isinstance(c, JudgeTurn)]
    assert 0 < len(asked.pcm16) <= 8 * 8000 * 2 and asked.pcm16[-320:] == bytes(320)
    if probability is not None:
        h.silence(after_ms)
        h.feed(TurnJudged(asked.run_id, probability))
    return h, 80 + after_ms + h.wait_until(lambda: h.engine.phase is not Phase.USER_SPEAKING)


def test_the_model_hearing_more_to_come_keeps_the_full_endpoint() -> None:
    _, waited = _judged(0.1)
    assert 480 <= waited <= 520  # 500 ms of silence, though the words read finished


def test_the_model_agreeing_lets_the_quick_endpoint_stand() -> None:
    _, waited = _judged(0.9)
    assert 240 <= waited <= 280


def test_a_late_finished_verdict_ends_the_turn_when_it_comes() -> None:
    _, waited = _judged(0.9, after_ms=300)  # slower than the short endpoint (250 ms)
    assert 380 <= waited <= 420  # onset 80 + 300: the turn ends on the verdict


def test_a_verdict_still_owed_holds_the_short_endpoint() -> None:
    h, waited = _judged(None)
    assert 480 <= waited <= 520  # the model never answered: the safe full endpoint
    assert sum(isinstance(c, JudgeTurn) for c in h.commands) == 1  # asked once per silence


def test_a_verdict_on_an_older_silence_is_ignored() -> None:
    h = Harness(stt=True, judge_turns=True, end_of_turn="smart-turn", speculate_ms=0)
    h.speak(800)
    h.silence(80)
    (first,) = [c for c in h.commands if isinstance(c, JudgeTurn)]
    h.speak(400)  # the caller went on: a new speech run
    h.feed(TranscriptUpdate("Check my bill.", is_final=True))
    h.silence(80)
    second = [c for c in h.commands if isinstance(c, JudgeTurn)][-1]
    assert second.run_id != first.run_id
    h.feed(TurnJudged(second.run_id, 0.9))
    h.feed(TurnJudged(first.run_id, 0.0))  # late, about the old silence
    waited = 80 + h.wait_until(lambda: h.engine.phase is not Phase.USER_SPEAKING)
    assert waited <= 280  # the quick endpoint: the stale "not finished" did not count
