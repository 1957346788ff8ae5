"""What the caller heard, from the simulator's recording of the bot leg.

The ElevenLabs fake speaks a steady 440 Hz tone; the fallback voice (espeak-ng, which
says the apology and the "one moment" line) speaks real speech. So each 20 ms of the
bot leg is ``silence``, ``tone`` (the main voice) or ``speech`` (the fallback voice),
and runs of the same kind make the spans the tests assert on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from callbridge.simulator.recording import Recorder

__all__ = ["Span", "heard"]

_RATE_HZ = 8000
_WINDOW = 160  # 20 ms
_TONE_HZ = 440.0
_SILENT_RMS = 60.0  # int16 units (about -55 dBFS)
_MIN_SPAN_S = 0.1
_BRIDGE_S = 0.3  # pauses inside one line (between words) do not split it


@dataclass(frozen=True)
class Span:
    kind: str  # "tone" | "speech"
    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


def heard(recorder: Recorder) -> list[Span]:
    """Audible spans of the bot leg in order; silence is what lies between them."""
    pcm = np.frombuffer(recorder.stereo_pcm16(), dtype="<i2").reshape(-1, 2)[:, 1]
    kinds = [_classify(pcm[i : i + _WINDOW]) for i in range(0, len(pcm) - _WINDOW + 1, _WINDOW)]
    step = _WINDOW / _RATE_HZ
    runs: list[Span] = []  # runs of one kind; a blip (a click between two segments) is
    for index, kind in enumerate(kinds):  # dropped before runs are joined into lines
        start = index * step
        if runs and runs[-1].kind == kind and abs(runs[-1].end_s - start) < 1e-9:
            runs[-1] = Span(kind, runs[-1].start_s, start + step)
        else:
            runs.append(Span(kind, start, start + step))
    spans: list[Span] = []
    for run in runs:
        if run.kind == "silence" or run.seconds < _MIN_SPAN_S:
            continue
        last = spans[-1] if spans else None
        if last is not None and last.kind == run.kind and run.start_s - last.end_s <= _BRIDGE_S:
            spans[-1] = Span(run.kind, last.start_s, run.end_s)
        else:
            spans.append(run)
    return spans


def _classify(window: np.ndarray) -> str:
    samples = window.astype(np.float64)
    energy = float(np.sum(samples * samples))
    if np.sqrt(energy / len(samples)) < _SILENT_RMS:
        return "silence"
    # Goertzel-style projection on 440 Hz: a pure tone puts (nearly) all energy there.
    t = np.arange(len(samples)) / _RATE_HZ
    c = float(np.dot(samples, np.cos(2 * np.pi * _TONE_HZ * t)))
    s = float(np.dot(samples, np.sin(2 * np.pi * _TONE_HZ * t)))
    share = 2 * (c * c + s * s) / (len(samples) * energy)
    return "tone" if share > 0.6 else "speech"
