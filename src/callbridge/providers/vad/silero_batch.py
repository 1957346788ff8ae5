"""Every call's Silero windows of a tick in one model run: the metronome's VAD.

One window at a time costs ~130 µs, almost all of it onnxruntime's per-run overhead; in
a batch of a hundred it costs ~30 µs. At 200 calls that is the difference between more
than a whole core and a fifth of one (bench/vad.py).

How it works: each tick the engine's metronome (``engine/metronome.py``) hands
``score_frames`` the new 20 ms frames of every call, already decoded into one array.
They are scaled to floats in one pass and appended to each call's stream; then round r
runs the r-th complete window of every call that has one, in one ``Session.run``, each
row with its own recurrent state, so each call's state sees its windows in order. A
call normally completes zero or one 32 ms window per tick, so a tick is one run; a
call whose frames came in a burst costs a few rounds, never a run per window. Each
frame gets the probability of the latest window complete when it ended, which is
exactly what ``SileroStream.speech_probability`` says frame by frame.

Inline on the loop's thread, not in a worker: the probabilities are needed in the same
tick (a worker hands them back a tick later, growing barge-in by 20 ms), one core gains
nothing from a second thread, and each hand-off of the GIL costs more than the run it
moves at these batch sizes (measured in bench/engine.py: see the commit note). Without
a metronome (scripts, benchmarks) a stream still answers frame by frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from callbridge.providers.base import VadStream
from callbridge.providers.vad.silero_model import (
    CONTEXT_SAMPLES,
    WINDOW_SAMPLES,
    Floats,
    SileroModel,
    SileroStream,
)

__all__ = ["BatchedSileroModel", "BatchedSileroStream"]

_ROW_SAMPLES = CONTEXT_SAMPLES + WINDOW_SAMPLES
_FRAME_SAMPLES = 160


class BatchedSileroModel(SileroModel):
    """The shared model, scoring all calls' frames of a tick together."""

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__(threshold)
        self.runs = 0  # model runs (rounds), for benchmarks and tests
        self.windows = 0  # windows scored in them

    def new_stream(self) -> BatchedSileroStream:
        return BatchedSileroStream(self)

    def score_frames(
        self, pcm16: NDArray[np.int16], calls: Sequence[tuple[VadStream, int, int]]
    ) -> NDArray[np.float32]:
        samples = pcm16.astype(np.float32)
        samples *= np.float32(1.0 / 32768.0)
        out = np.zeros(len(pcm16) // _FRAME_SAMPLES, dtype=np.float32)
        plans: list[tuple[SileroStream, int, NDArray[np.int64], float]] = []
        for vad, first, count in calls:
            stream = _own(self, vad)
            # Windows complete when each frame has been added (none may be pending).
            ends = stream._filled - CONTEXT_SAMPLES + _FRAME_SAMPLES * np.arange(1, count + 1)
            done = ends // WINDOW_SAMPLES
            stream._push_samples(samples[first * _FRAME_SAMPLES : (first + count) * _FRAME_SAMPLES])
            plans.append((stream, first, done, stream._probability))
        probabilities = self._run_rounds([(p[0], int(p[2][-1])) for p in plans if len(p[2])])
        for stream, first, done, before in plans:
            if not len(done):
                continue
            scored = probabilities.get(stream)
            if scored is None:  # no window completed: every frame keeps the last verdict
                out[first : first + len(done)] = before
                continue
            out[first : first + len(done)] = np.concatenate(([before], scored))[done]
        return out

    def _run_rounds(self, wanted: list[tuple[SileroStream, int]]) -> dict[SileroStream, Floats]:
        """Round r scores the r-th window of every stream that has more than r; the
        streams go longest first, so each round's rows are a prefix of the last's and the
        states carry over in place."""
        wanted = sorted((w for w in wanted if w[1] > 0), key=lambda w: -w[1])
        if not wanted:
            return {}
        streams = [stream for stream, _ in wanted]
        scored = np.zeros((len(streams), wanted[0][1]), dtype=np.float32)
        states = np.stack([stream._state for stream in streams], axis=1)
        rows = len(streams)
        for r in range(wanted[0][1]):
            while wanted[rows - 1][1] <= r:
                rows -= 1
            windows = np.empty((rows, _ROW_SAMPLES), dtype=np.float32)
            for i in range(rows):
                streams[i]._take_window(windows[i])
            out, new = self.infer_batch(windows, np.ascontiguousarray(states[:, :rows]))
            scored[:rows, r] = out
            states[:, :rows] = new
            self.runs += 1
            self.windows += rows
        result: dict[SileroStream, Floats] = {}
        for i, (stream, count) in enumerate(wanted):
            stream._state = states[:, i].copy()
            stream._probability = float(scored[i, count - 1])
            result[stream] = scored[i, :count]
        return result


def _own(model: BatchedSileroModel, vad: VadStream) -> SileroStream:
    if not isinstance(vad, SileroStream) or vad.model is not model:
        raise TypeError("score_frames: a stream of another model")
    return vad


class BatchedSileroStream(SileroStream):
    """A call's stream that the metronome scores with everyone else's (``batch_vad``);
    fed by hand it answers frame by frame like any ``SileroStream``."""

    __slots__ = ()

    @property
    def batch_vad(self) -> BatchedSileroModel:
        model = self._model
        assert isinstance(model, BatchedSileroModel)
        return model
