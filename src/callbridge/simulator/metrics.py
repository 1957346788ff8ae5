"""What a caller feels, measured on the caller's side of the line (client clock).

Definitions (the report and the benchmark use these and nothing else):

- *speech onset* / *speech end*: the send time of the first / last voiced frame of an
  utterance: the earliest moment the server could know.
- *turn latency*: speech end (or DTMF sent) → first audible bot audio *played* after it.
- *barge-in reaction*: onset of caller speech that starts while the bot is speaking →
  ``clear`` received.
- *stale audio*: audible bot audio played after that onset, before the ``clear`` (or
  before the reply ended by itself when no ``clear`` came).
- *pacing jitter*: for each received media frame inside a run of bot audio, how much
  later it arrived than the earliest pace seen so far in that run:
  ``(arrival − media_time) − min(arrival − media_time)``. A server that sends ahead of
  real time and then paces at 20 ms scores 0; every event-loop stall shows up. A run is
  one segment: it restarts at each ``mark`` (the server marks the end of each TTS
  segment, and the wait for the next segment's first audio is the provider's latency,
  not pacing; underruns catch it if the caller hears it) and at each ``clear``.

Sans-I/O: every method takes the time as an argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from callbridge.simulator.voice import Utterance

__all__ = ["CallerSpeech", "PacingMeter", "TurnMetrics", "TurnTracker", "percentile"]


@dataclass(slots=True)
class TurnMetrics:
    """One caller turn: an utterance or a DTMF digit."""

    index: int
    kind: Literal["speech", "dtmf"]
    label: str
    onset_s: float
    end_s: float | None = None
    barge_in: bool = False
    latency_ms: float | None = None
    bargein_ms: float | None = None
    stale_ms: float = 0.0
    _stale_open: bool = field(default=False, repr=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "kind": self.kind,
            "label": self.label,
            "barge_in": self.barge_in,
            "latency_ms": _round(self.latency_ms),
            "bargein_ms": _round(self.bargein_ms),
            "stale_ms": round(self.stale_ms, 1),
        }


class TurnTracker:
    """Turns, fed with the caller's sends and the playback model's events."""

    def __init__(self) -> None:
        self.turns: list[TurnMetrics] = []
        self.clears = 0

    @property
    def current(self) -> TurnMetrics | None:
        return self.turns[-1] if self.turns else None

    def speech_onset(self, at_s: float, *, label: str, bot_speaking: bool) -> TurnMetrics:
        turn = TurnMetrics(len(self.turns) + 1, "speech", label, at_s, barge_in=bot_speaking)
        turn._stale_open = bot_speaking
        self.turns.append(turn)
        return turn

    def speech_end(self, at_s: float) -> None:
        turn = self.current
        if turn is not None and turn.kind == "speech" and turn.end_s is None:
            turn.end_s = at_s

    def dtmf_sent(self, at_s: float, digit: str, *, bot_speaking: bool) -> TurnMetrics:
        turn = TurnMetrics(
            len(self.turns) + 1, "dtmf", digit, at_s, end_s=at_s, barge_in=bot_speaking
        )
        self.turns.append(turn)
        return turn

    def bot_speech_started(self, at_s: float) -> None:
        turn = self.current
        if turn is None or turn.end_s is None or turn.latency_ms is not None:
            return
        if at_s >= turn.end_s:
            turn.latency_ms = (at_s - turn.end_s) * 1000.0

    def bot_speech_ended(self) -> None:
        turn = self.current
        if turn is not None:
            turn._stale_open = False

    def audio_played(self, start_s: float, duration_s: float, *, audible: bool) -> None:
        turn = self.current
        if turn is None or not turn._stale_open or not audible:
            return
        end_s = start_s + duration_s
        if end_s > turn.onset_s:
            turn.stale_ms += (end_s - max(start_s, turn.onset_s)) * 1000.0

    def clear_received(self, at_s: float) -> None:
        self.clears += 1
        turn = self.current
        if turn is not None and turn.barge_in and turn.bargein_ms is None:
            turn.bargein_ms = max(0.0, (at_s - turn.onset_s) * 1000.0)
            turn._stale_open = False


class CallerSpeech:
    """The utterance the caller is saying, a frame at a time; books its voiced span's onset
    and end into ``tracker`` as those frames go out (the definitions above)."""

    __slots__ = ("index", "tracker", "utterance")

    def __init__(self, tracker: TurnTracker) -> None:
        self.tracker = tracker
        self.utterance: Utterance | None = None  # None: the caller is quiet
        self.index = 0

    def say(self, utterance: Utterance) -> None:
        """Start ``utterance`` from its first frame (cutting one in progress)."""
        self.utterance, self.index = utterance, 0

    def next_frame(self, now: float, *, bot_speaking: bool) -> int | None:
        """Index of the utterance's frame to send now (None: silence); once its last frame
        is handed out, ``utterance`` is None."""
        utterance = self.utterance
        if utterance is None:
            return None
        i = self.index
        if i == utterance.onset_index:
            self.tracker.speech_onset(now, label=utterance.label, bot_speaking=bot_speaking)
        if i == utterance.end_index:
            self.tracker.speech_end(now)
        self.index = i + 1
        if self.index >= len(utterance.payloads):
            self.utterance = None
        return i


class PacingMeter:
    """Jitter of received bot frames (see the module docstring).

    A run ends at a segment boundary (``restart``: a mark or a clear) or after
    ``run_gap_ms`` without frames, so a pause between replies is not jitter.
    """

    def __init__(self, *, run_gap_ms: float = 500.0) -> None:
        self._gap_s = run_gap_ms / 1000.0
        self._last_arrival_s: float | None = None
        self._media_s = 0.0
        self._best_offset_s = 0.0
        self.samples_ms: list[float] = []
        self.frames = 0

    def frame(self, arrival_s: float, duration_s: float) -> float:
        """Record one frame; return its jitter in ms."""
        self.frames += 1
        if self._last_arrival_s is None or arrival_s - self._last_arrival_s >= self._gap_s:
            self._media_s = 0.0
            self._best_offset_s = arrival_s
        offset = arrival_s - self._media_s
        self._best_offset_s = min(self._best_offset_s, offset)
        jitter_ms = (offset - self._best_offset_s) * 1000.0
        self.samples_ms.append(jitter_ms)
        self._media_s += duration_s
        self._last_arrival_s = arrival_s
        return jitter_ms

    def restart(self) -> None:
        self._last_arrival_s = None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(len(ordered) * q / 100.0)))
    return ordered[rank - 1]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
