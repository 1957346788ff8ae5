"""A stored call's stereo recording as a replay plan, and its turns measured from audio.

Sans-I/O: PCM in, plans and timings out. Both legs are judged in 20 ms frames on the
recording's own timeline (sample 0 = the stream's start), with the simulator's threshold
for "audible" (``voice.VOICED_DBFS``), so the original call and its replay are measured
by the same rule:

- a *caller utterance* is a run of audible caller frames with no pause of ``gap_ms`` or
  more inside it;
- a *bot run* is a run of audible bot frames with no pause of ``BOT_GAP_MS`` or more
  (the simulator's ``reply_gap_ms``: a pause between sentences is not a new reply);
- *turn latency* is the simulator's: the start of the caller's last audible frame → the
  first audible bot sample of the next bot run that starts after it (before the caller's
  next utterance; otherwise the turn went unanswered).

The plan replays the caller's leg unchanged, cut into consecutive pieces (one per
utterance, with the noise before it), so the simulator can time each turn; key presses
are placed at their recorded offsets. ``speed`` > 1 shortens only the *dead air*, the
stretches before an utterance where neither side was audible in the original: the
caller's words, the bot's replies and everything the server times stay in real time.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callbridge.audio import ulaw
from callbridge.simulator.voice import VOICED_DBFS, Utterance, from_pcm, is_audible

__all__ = [
    "BOT_GAP_MS",
    "FRAME_MS",
    "CallerTurnTiming",
    "Press",
    "ReplayPlan",
    "Speak",
    "Track",
    "caller_turns",
    "plan_replay",
    "split_stereo",
]

RATE_HZ = 8000
FRAME_MS = 20
FRAME_SAMPLES = RATE_HZ * FRAME_MS // 1000
BOT_GAP_MS = 500
DEFAULT_GAP_MS = 600
# The amplitude of a full-scale-relative sine at VOICED_DBFS: a sample this loud is audio.
_AUDIBLE_PEAK = 32768.0 * 10 ** (VOICED_DBFS / 20.0)


@dataclass(frozen=True, slots=True)
class Track:
    """Both legs of a recording, as PCM16 sample arrays of equal length."""

    caller: npt.NDArray[np.int16]
    bot: npt.NDArray[np.int16]

    @property
    def duration_ms(self) -> int:
        return len(self.caller) * 1000 // RATE_HZ


@dataclass(frozen=True, slots=True)
class Speak:
    """Play ``utterance`` starting at the call's frame ``frame``."""

    frame: int
    utterance: Utterance


@dataclass(frozen=True, slots=True)
class Press:
    frame: int
    digit: str


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    actions: tuple[Speak | Press, ...]
    end_frame: int  # the caller hangs up here (unless the server did first)
    removed_ms: int  # dead air taken out by ``speed``

    @property
    def utterances(self) -> int:
        return sum(isinstance(a, Speak) for a in self.actions)


@dataclass(frozen=True, slots=True)
class CallerTurnTiming:
    index: int
    onset_s: float
    end_s: float
    latency_ms: float | None  # None: no bot reply began before the caller spoke again
    over_bot: bool  # the caller began while the bot was audible (a barge-in attempt)
    dtmf: str | None = None  # a key press rather than words

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "onset_s": round(self.onset_s, 3),
            "end_s": round(self.end_s, 3),
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "over_bot": self.over_bot,
            "dtmf": self.dtmf,
        }


def split_stereo(interleaved_pcm16: bytes) -> Track:
    """Caller (left) and bot (right) of a stereo recording, padded to whole frames."""
    samples = np.frombuffer(interleaved_pcm16, dtype="<i2")
    if len(samples) % 2:
        samples = samples[:-1]
    pairs = samples.reshape(-1, 2)
    pad = (-len(pairs)) % FRAME_SAMPLES
    pairs = np.concatenate([pairs, np.zeros((pad, 2), dtype="<i2")])
    return Track(caller=pairs[:, 0].copy(), bot=pairs[:, 1].copy())


def caller_turns(
    track: Track, presses: Sequence[tuple[int, str]] = (), *, gap_ms: int = DEFAULT_GAP_MS
) -> list[CallerTurnTiming]:
    """The caller's utterances and key presses (``(offset_ms, digit)``) in order, and how
    the bot answered each (see the module docstring)."""
    spans = _runs(_audible_frames(track.caller), gap_ms // FRAME_MS)
    bot_runs = _runs(_audible_frames(track.bot), BOT_GAP_MS // FRAME_MS)
    # (onset sample, end sample, label): an utterance ends at its last audible frame.
    moments = [(a * FRAME_SAMPLES, b * FRAME_SAMPLES, "") for a, b in spans]
    moments += [(ms * RATE_HZ // 1000,) * 2 + (digit,) for ms, digit in presses]
    moments.sort()
    turns = []
    for i, (onset, end, digit) in enumerate(moments):
        next_onset = moments[i + 1][0] if i + 1 < len(moments) else None
        latency = None
        for run_start, _ in bot_runs:
            first = _first_loud_sample(track.bot, run_start)
            if first > end and (next_onset is None or first < next_onset):
                latency = (first - end) * 1000.0 / RATE_HZ
                break
        over_bot = any(
            a * FRAME_SAMPLES <= onset < (b + 1) * FRAME_SAMPLES for a, b in bot_runs
        )
        turns.append(
            CallerTurnTiming(
                index=i + 1,
                onset_s=onset / RATE_HZ,
                end_s=end / RATE_HZ,
                latency_ms=latency,
                over_bot=over_bot,
                dtmf=digit or None,
            )
        )
    return turns


def plan_replay(
    track: Track,
    presses: Sequence[tuple[int, str]] = (),
    *,
    speed: float = 1.0,
    gap_ms: int = DEFAULT_GAP_MS,
) -> ReplayPlan:
    """The caller's leg as timed utterances plus key presses (``(offset_ms, digit)``)."""
    if speed < 1.0:
        raise ValueError(f"speed must be 1 or more, got {speed:g}")
    caller_audible = _audible_frames(track.caller)
    bot_audible = _audible_frames(track.bot)
    spans = _runs(caller_audible, gap_ms // FRAME_MS)
    frames = len(caller_audible)
    press_frames = [max(0, min(frames, ms // FRAME_MS)) for ms, _ in presses]
    cuts = _dead_air(spans, press_frames, frames, caller_audible, bot_audible, speed)

    def moved(frame: int) -> int:
        """Where an original frame lands once the cuts before it are taken out."""
        shift = 0
        for start, removed in cuts:
            if frame >= start + removed:
                shift += removed
            elif frame > start:
                shift += frame - start
        return frame - shift

    kept = np.ones(frames, dtype=bool)
    for start, removed in cuts:
        kept[start : start + removed] = False
    actions: list[Speak | Press] = []
    piece_start = 0
    for n, (_, last) in enumerate(spans):
        piece_end = last + 1 if n + 1 < len(spans) else frames
        piece = [f for f in range(piece_start, piece_end) if kept[f]]
        pcm = b"".join(
            track.caller[f * FRAME_SAMPLES : (f + 1) * FRAME_SAMPLES].tobytes() for f in piece
        )
        actions.append(Speak(moved(piece_start), _utterance(pcm, f"caller {n + 1}")))
        piece_start = piece_end
    for frame, (_, digit) in zip(press_frames, presses, strict=True):
        actions.append(Press(moved(frame), digit))
    actions.sort(key=lambda a: (a.frame, isinstance(a, Press)))
    removed_frames = sum(r for _, r in cuts)
    return ReplayPlan(tuple(actions), frames - removed_frames, removed_frames * FRAME_MS)


def _dead_air(
    spans: Sequence[tuple[int, int]],
    press_frames: Sequence[int],
    frames: int,
    caller_audible: Sequence[bool],
    bot_audible: Sequence[bool],
    speed: float,
) -> list[tuple[int, int]]:
    """(first frame, frames removed) of the silence before each caller act and the end.

    The silence counted runs back from the act while neither leg is audible, never past
    the caller's previous act; ``1 - 1/speed`` of it goes."""
    if speed <= 1.0:
        return []
    acts = sorted([(a, b) for a, b in spans] + [(f, f) for f in press_frames] + [(frames, frames)])
    cuts = []
    previous_end = -1
    for onset, last in acts:
        dead_from = onset
        while dead_from - 1 > previous_end and not (
            caller_audible[dead_from - 1] or bot_audible[dead_from - 1]
        ):
            dead_from -= 1
        removed = int((onset - dead_from) * (1.0 - 1.0 / speed))
        if removed > 0:
            cuts.append((dead_from, removed))
        previous_end = max(previous_end, last)
    return cuts


# ------------------------------------------------------------------ private


def _audible_frames(samples: npt.NDArray[np.int16]) -> list[bool]:
    """Per 20 ms frame, judged on the line's μ-law exactly as the simulator judges it."""
    data = samples.tobytes()
    step = FRAME_SAMPLES * 2
    return [is_audible(ulaw.encode(data[i : i + step])) for i in range(0, len(data), step)]


def _runs(audible: Sequence[bool], max_gap_frames: int) -> list[tuple[int, int]]:
    """(first, last) audible frame of each run; pauses shorter than the gap are inside."""
    runs: list[tuple[int, int]] = []
    for i, loud in enumerate(audible):
        if not loud:
            continue
        if runs and i - runs[-1][1] - 1 < max_gap_frames:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _first_loud_sample(samples: npt.NDArray[np.int16], frame: int) -> int:
    """Sample precision inside the frame where a bot run starts."""
    window = samples[frame * FRAME_SAMPLES : (frame + 1) * FRAME_SAMPLES].astype(np.int32)
    loud = np.flatnonzero(np.abs(window) >= _AUDIBLE_PEAK)
    return frame * FRAME_SAMPLES + (int(loud[0]) if len(loud) else 0)


def _utterance(pcm16: bytes, label: str) -> Utterance:
    if pcm16:
        return from_pcm(pcm16, RATE_HZ, label)
    silent = b"\xff" * FRAME_SAMPLES
    return Utterance(label, (silent,), (base64.b64encode(silent).decode(),), None, None)
