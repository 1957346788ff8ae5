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

Inline on the loop's thread, not in a worker (as the batcher before the metronome did):
the probabilities are needed in the same tick (a worker's come a tick later, growing
barge-in by 20 ms), a server pinned to one core gains nothing from a second thread, and
the hand-off costs CPU: measured on this machine, a run in a one-thread executor took
+90 µs of CPU at 30 calls' windows, +310 µs at 100, +840 µs at 200 (4–8 % more than the
run itself). Without a metronome (scripts, benchmarks) a stream answers frame by frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from callbridge.providers.base import VadStream
from callbridge.providers.vad.silero_model import (
    CONTEXT_SAMPLES,
    WINDOW_SAMPLES,
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
    ) -> list[float]:
        samples = pcm16.astype(np.float32)
        samples *= np.float32(1.0 / 32768.0)
        out = [0.0] * (len(pcm16) // _FRAME_SAMPLES)
        plans: list[tuple[SileroStream, int, int, int, float]] = []
        wanted: list[tuple[SileroStream, int]] = []
        for vad, first, count in calls:
            stream = _own(self, vad)
            pending = stream._filled - CONTEXT_SAMPLES  # < one window: none is left over
            stream._push_samples(samples[first * _FRAME_SAMPLES : (first + count) * _FRAME_SAMPLES])
            plans.append((stream, first, count, pending, stream._probability))
            windows = (pending + count * _FRAME_SAMPLES) // WINDOW_SAMPLES
            if windows:
                wanted.append((stream, windows))
        scored = self._run_rounds(wanted)
        for stream, first, count, pending, before in plans:
            got = scored.get(stream)
            if got is None:  # no window completed: every frame keeps the last verdict
                out[first : first + count] = [before] * count
                continue
            for j in range(count):  # the latest window complete when frame j ended
                done = (pending + (j + 1) * _FRAME_SAMPLES) // WINDOW_SAMPLES
                out[first + j] = got[done - 1] if done else before
        return out

    def _run_rounds(
        self, wanted: list[tuple[SileroStream, int]]
    ) -> dict[SileroStream, list[float]]:
        """Round r scores the r-th window of every stream that has more than r; the
        streams go longest first, so each round's rows are a prefix of the last's and the
        states carry over in place."""
        if not wanted:
            return {}
        wanted.sort(key=lambda w: -w[1])
        streams = [stream for stream, _ in wanted]
        rounds = wanted[0][1]
        scored = np.zeros((len(streams), rounds), dtype=np.float32)
        states = np.stack([stream._state for stream in streams], axis=1)
        rows = len(streams)
        for r in range(rounds):
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
        result: dict[SileroStream, list[float]] = {}
        for i, (row, (stream, count)) in enumerate(zip(scored.tolist(), wanted, strict=True)):
            stream._state = states[:, i]  # a view: the next tick stacks them anew
            stream._probability = row[count - 1]
            result[stream] = row[:count]
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
