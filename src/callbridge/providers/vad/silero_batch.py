"""Every call's Silero windows of a tick in one model run: the metronome's VAD.

One window at a time costs ~80 µs, most of it onnxruntime's per-run overhead; in a
batch of a hundred it costs ~11 µs (bench/vad_runs.py, the flat graph of
``silero_graph.py``). At 200 calls that is the difference between most of a core and a
tenth of one (bench/vad.py).

How it works: each tick the engine's metronome (``engine/metronome.py``) hands
``score_frames`` the new 20 ms frames of every call, already decoded into one array.
Each call appends its frames' bytes to its own PCM carry-over (a ``bytearray``: the
32 context samples, then audio not yet run); round r runs the r-th complete window of
every call that has one, in one ``Session.run``, each row with its own recurrent state,
so each call's state sees its windows in order. A call normally completes zero or one
32 ms window per tick, so a tick is one run; a call whose frames came in a burst costs
a few rounds, never a run per window. Each frame gets the probability of the latest
window complete when it ended, exactly what ``SileroStream.speech_probability`` says
frame by frame.

No numpy call per call: the rows of a round are joined as bytes and scaled into one
preallocated float buffer in one call, and every call's recurrent state is a row of one
array owned by the model, indexed by the stream's slot, so a round gathers and scatters
all states with one fancy index each. A slot is freed when its stream is dropped and
reused by the next call (``new_stream`` zeroes it). The bookkeeping around the run
went from ≈4.5 to ≈2 µs per call-frame at 50–200 calls (bench/vad.py, "without the
model"); the run itself, ≈11 µs a window in batches of 100 (≈35 with the shipped
graph's per-image convolutions), is the model's arithmetic, not onnxruntime's per-run
overhead (IOBinding and ``run_with_ort_values`` saved nothing), so it stays a plain
``Session.run``.

In the server a run costs 2–3× that: between two beats the server's other work, and
whatever runs on the other core (the load bench's callers and fakes; a shared host),
evict the model's weights (≈1.2 MB), onnxruntime's own code and data and the
activations (≈20–30 KB a window) from the caches. ``bench/vad_runs.py --cold``: 48 MiB
swept before a run add ≈0.17 ms to a one-``Relu`` graph (onnxruntime's run path alone),
≈0.65 ms to the model at 25 windows, ≈0.9 ms at 64; 2 MiB (L2) or one touch per page
(the TLB) add nothing; IOBinding, no memory pattern, no arena or denormals as zero
change nothing, warm or cold. ``bench/vad.py --server 80`` (the server's arrival
pattern, caches swept between beats) puts this VAD at ≈11–14 % of a core, ≈6 % warm
(the 80-call server profile: ≈13 % in ``Session.run``, ≈17 % with the bookkeeping).
Measured and not kept, as no cheaper cold: a late beat's second windows stepped through
the LSTM in the same run (the same numbers bit for bit, one run a beat, but the
sequence LSTM costs what the second run saved); the int16 scaling and the state gather
and scatter inside the graph (its extra kernels cost what the numpy calls did); the
first encoder layer as one shared 195×128 matrix (a quarter of its weights); a big
batch split into runs of 16–50 windows (activations that stay in L2). What would
cut it is fewer runs a second, i.e. a slower beat, which barge-in cannot afford (and a
late beat's second rounds eat most of it: at a 20 ms beat, ``--beat-ms 20``, 43 % of
beats need two).

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
import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]
from numpy.typing import NDArray

from callbridge.providers.base import VadStream
from callbridge.providers.vad.silero_model import (
    CONTEXT_SAMPLES,
    WINDOW_SAMPLES,
    Floats,
    load_session,
    model_feeds,
)

__all__ = ["BatchedSileroModel", "BatchedSileroStream"]

_ROW_SAMPLES = CONTEXT_SAMPLES + WINDOW_SAMPLES
_CONTEXT_BYTES = CONTEXT_SAMPLES * 2
_WINDOW_BYTES = WINDOW_SAMPLES * 2
_ROW_BYTES = _ROW_SAMPLES * 2
_FRAME_BYTES = 320
_FRAME_SAMPLES = 160
_SCALE = np.float32(1.0 / 32768.0)  # a power of two: int16 → float32 is exact either way
_FIRST_SLOTS = 64
_OUTPUTS = ["output", "stateN"]


class BatchedSileroModel:
    """The shared model, scoring all calls' frames of a tick together; it owns every
    stream's recurrent state (``_states[:, slot]``). Not a ``SileroModel``: its streams
    keep no state of their own, so ``SileroModel.process_batch`` could not feed them.
    Its streams share its arrays: feed them from one thread (the event loop's)."""

    name = "silero"

    def __init__(self, threshold: float = 0.5, session: ort.InferenceSession | None = None) -> None:
        self._session = session if session is not None else load_session()
        self._feeds = model_feeds(self._session)
        self.threshold = threshold
        self._states: Floats = np.zeros((2, _FIRST_SLOTS, 128), dtype=np.float32)
        self._rows: Floats = np.empty((_FIRST_SLOTS, _ROW_SAMPLES), dtype=np.float32)
        self._free: list[int] = []
        self._slots = 0  # slots ever handed out: the high-water mark
        self.runs = 0  # model runs (rounds), for benchmarks and tests
        self.windows = 0  # windows scored in them

    @property
    def session(self) -> ort.InferenceSession:
        return self._session

    def infer_batch(self, windows: Floats, states: Floats) -> tuple[Floats, Floats]:
        """One run for many calls, as ``SileroModel.infer_batch``: ``windows`` (B, 288),
        ``states`` (2, B, 128) → (probabilities (B,), new states (2, B, 128))."""
        output, state = self._session.run(
            _OUTPUTS, {**self._feeds, "input": windows, "state": states}
        )
        return np.asarray(output, dtype=np.float32)[:, 0], np.asarray(state, dtype=np.float32)

    @property
    def slots(self) -> int:
        """Slots ever in use at once (a call's slot is reused once its stream is gone)."""
        return self._slots

    def new_stream(self) -> BatchedSileroStream:
        return BatchedSileroStream(self, self._claim())

    def _claim(self) -> int:
        if self._free:
            slot = self._free.pop()
        else:
            slot = self._slots
            self._slots += 1
            if slot == self._states.shape[1]:
                grown = np.zeros((2, 2 * slot, 128), dtype=np.float32)
                grown[:, :slot] = self._states
                self._states = grown
        self._states[:, slot] = 0.0
        return slot

    def _release(self, slot: int) -> None:
        self._free.append(slot)

    def score_frames(
        self, pcm16: NDArray[np.int16], calls: Sequence[tuple[VadStream, int, int]]
    ) -> list[float]:
        data = memoryview(np.ascontiguousarray(pcm16, dtype="<i2").tobytes())
        out = [0.0] * (len(pcm16) // _FRAME_SAMPLES)
        ready: list[tuple[int, BatchedSileroStream, int, int, int]] = []
        most = 0
        for vad, first, count in calls:
            if type(vad) is not BatchedSileroStream or vad._model is not self:
                raise TypeError("score_frames: a stream of another model")
            pending = vad._pending
            unrun = len(pending) - _CONTEXT_BYTES  # < one window: none is left over
            pending += data[first * _FRAME_BYTES : (first + count) * _FRAME_BYTES]
            windows = (len(pending) - _CONTEXT_BYTES) // _WINDOW_BYTES
            if windows:
                ready.append((windows, vad, first, count, unrun))
                most = max(most, windows)
            elif count == 1:
                out[first] = vad._probability
            else:  # no window completed: every frame keeps the last verdict
                out[first : first + count] = [vad._probability] * count
        if most == 1:  # the usual tick: one window per ready call, one run
            probabilities = self._run_round([item[1] for item in ready], 0)
            for (_, stream, first, count, unrun), p in zip(ready, probabilities, strict=True):
                del stream._pending[:_WINDOW_BYTES]
                if count == 1:
                    out[first] = p
                else:
                    _spread(out, first, count, unrun, [p], stream._probability)
                stream._probability = p
        elif most:
            ready.sort(key=_most_windows_first)
            scored = self._run_rounds([item[1] for item in ready], most, ready)
            for (windows, stream, first, count, unrun), got in zip(ready, scored, strict=True):
                del stream._pending[: windows * _WINDOW_BYTES]
                _spread(out, first, count, unrun, got, stream._probability)
                stream._probability = got[-1]
        return out

    def _run_rounds(
        self,
        streams: list[BatchedSileroStream],
        rounds: int,
        ready: list[tuple[int, BatchedSileroStream, int, int, int]],
    ) -> list[list[float]]:
        """Round r scores the r-th window of every stream that has more than r; the
        streams come longest first, so each round's rows are a prefix of the last's."""
        scored: list[list[float]] = [[] for _ in streams]
        rows = len(streams)
        for r in range(rounds):
            while ready[rows - 1][0] <= r:
                rows -= 1
            for got, p in zip(scored, self._run_round(streams[:rows], r), strict=False):
                got.append(p)
        return scored

    def _run_round(self, streams: list[BatchedSileroStream], r: int) -> list[float]:
        """One model run: window r (with its context) of each stream, its state in and out."""
        rows = len(streams)
        if rows > len(self._rows):
            self._rows = np.empty((2 * rows, _ROW_SAMPLES), dtype=np.float32)
        start = r * _WINDOW_BYTES
        end = start + _ROW_BYTES
        joined = b"".join([stream._pending[start:end] for stream in streams])
        windows = self._rows[:rows]
        samples = np.frombuffer(joined, dtype="<i2").reshape(rows, _ROW_SAMPLES)
        np.multiply(samples, _SCALE, out=windows)
        slots = np.fromiter([stream._slot for stream in streams], dtype=np.intp, count=rows)
        # take: a contiguous (2, rows, 128) in one call (``[:, slots]`` is not, and
        # onnxruntime would copy it again)
        probabilities, states = self.infer_batch(windows, self._states.take(slots, axis=1))
        self._states[:, slots] = states
        self.runs += 1
        self.windows += rows
        result: list[float] = probabilities.tolist()
        return result


def _spread(
    out: list[float], first: int, count: int, unrun: int, got: list[float], before: float
) -> None:
    """Each of a call's ``count`` frames gets the latest window complete when it ended
    (``unrun``: bytes waiting before the first frame; ``before``: the last verdict)."""
    for j in range(count):
        done = (unrun + (j + 1) * _FRAME_BYTES) // _WINDOW_BYTES
        out[first + j] = got[done - 1] if done else before


def _most_windows_first(item: tuple[int, BatchedSileroStream, int, int, int]) -> int:
    return -item[0]


class BatchedSileroStream:
    """A call's stream that the metronome scores with everyone else's (``batch_vad``);
    fed by hand it answers frame by frame, the same numbers as a ``SileroStream``.

    ``_pending`` holds the 32 context samples then the audio not yet run, as PCM16
    bytes; the recurrent state is the model's row ``_slot``.
    """

    __slots__ = ("_model", "_pending", "_probability", "_slot")

    def __init__(self, model: BatchedSileroModel, slot: int) -> None:
        self._model = model
        self._slot = slot
        self._pending = bytearray(_CONTEXT_BYTES)
        self._probability = 0.0

    def __del__(self) -> None:
        self._model._release(self._slot)

    @property
    def model(self) -> BatchedSileroModel:
        return self._model

    @property
    def batch_vad(self) -> BatchedSileroModel:
        return self._model

    @property
    def _state(self) -> Floats:
        """This call's recurrent state (2, 128): a copy, for tests."""
        return self._model._states[:, self._slot].copy()

    def speech_probability(self, pcm16: bytes) -> float:
        if len(pcm16) % 2:
            raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm16)}")
        pending = self._pending
        pending += pcm16
        windows = (len(pending) - _CONTEXT_BYTES) // _WINDOW_BYTES
        model, slot = self._model, self._slot
        for r in range(windows):
            row = bytes(pending[r * _WINDOW_BYTES : r * _WINDOW_BYTES + _ROW_BYTES])
            window = np.frombuffer(row, dtype="<i2").astype(np.float32)[np.newaxis]
            window *= _SCALE
            probabilities, states = model.infer_batch(window, model._states[:, slot : slot + 1])
            model._states[:, slot] = states[:, 0]
            self._probability = float(probabilities[0])
        del pending[: windows * _WINDOW_BYTES]
        return self._probability

    def reset(self) -> None:
        self._model._states[:, self._slot] = 0.0
        self._pending = bytearray(_CONTEXT_BYTES)
        self._probability = 0.0
