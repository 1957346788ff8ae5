"""Runs every call's Silero windows together: one model run per tick for all calls.

One window at a time costs ~130 µs, almost all of it onnxruntime's per-run overhead; in
a batch of a hundred it costs ~30 µs. At 200 calls that is the difference between more
than a whole core and a fifth of one (bench/vad.py).

How it works: a call's stream buffers its 20 ms frames and, when a 32 ms window is
complete, asks the process's batcher for a run and keeps answering with its latest
probability. The batcher wakes every ``period_s`` and takes *every* complete window of
every waiting call on the event loop's thread (a call whose frames came in a burst has
several), then runs them in its own worker thread: round r holds the r-th window of each
call that has one, so each call's recurrent state still sees its windows in order and a
burst costs a few batched rounds, never a run per window. The loop keeps serving calls
meanwhile (onnxruntime releases the GIL) and the results are written back on the loop's
thread, so no stream is ever touched from two threads. A verdict is at most about one
period late; the engine's speech tracker dates runs back over that lag. Without a running
event loop (scripts, benchmarks) streams run inline.

Why never inline when behind (as this module once did past three windows of backlog):
under load the loop lags, frames arrive in bursts, and one-window runs at ~130 µs each
took half the core at 50 calls (``bench/load.py 50 --stack seed --profile``) — the
exact overload they were meant to ride out.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from callbridge.providers.vad.silero_model import (
    CONTEXT_SAMPLES,
    WINDOW_SAMPLES,
    Floats,
    SileroModel,
    SileroStream,
)

__all__ = ["BatchedSileroModel", "BatchedSileroStream", "SileroBatcher"]

_ROW_SAMPLES = CONTEXT_SAMPLES + WINDOW_SAMPLES

log = logging.getLogger(__name__)

class SileroBatcher:
    def __init__(self, model: SileroModel, period_s: float = 0.02) -> None:
        self._model = model
        self._period_s = period_s
        self._ready: dict[BatchedSileroStream, None] = {}  # ordered set
        self._task: asyncio.Task[None] | None = None
        # Its own thread: the loop's default executor may be busy with anything else.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="silero")
        self.runs = 0
        self.windows = 0

    def request(self, stream: BatchedSileroStream) -> bool:
        """Queue ``stream`` for the next run; False if no loop runs (run it inline)."""
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            self._task = loop.create_task(self._run(), name="silero-batcher")
        self._ready[stream] = None
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._period_s)
            if not self._ready:
                continue
            streams = [s for s in self._ready if s._ready()]
            self._ready.clear()
            if not streams:
                continue
            rounds, states = self._gather_all(streams)
            for stream in streams:
                stream._in_flight = True
            try:
                probabilities, new_states = await loop.run_in_executor(
                    self._executor, self._infer_rounds, rounds, states
                )
            finally:
                for stream in streams:
                    stream._in_flight = False
            self._model.scatter(streams, probabilities, new_states)
            for stream in streams:
                if stream._ready():  # frames came in while the model ran
                    self._ready[stream] = None
            self.runs += len(rounds)
            self.windows += sum(len(windows) for windows in rounds)

    @staticmethod
    def _gather_all(streams: list[BatchedSileroStream]) -> tuple[list[Floats], Floats]:
        """Every complete window of each stream: round r has the r-th window of the
        first ``len(rounds[r])`` streams (the streams are sorted, longest backlog first)."""
        streams.sort(key=lambda s: -s._filled)
        rounds: list[Floats] = []
        while True:
            ready = 0
            while ready < len(streams) and streams[ready]._ready():
                ready += 1
            if ready == 0:
                break
            windows = np.empty((ready, _ROW_SAMPLES), dtype=np.float32)
            for i in range(ready):
                streams[i]._take_window(windows[i])
            rounds.append(windows)
        return rounds, np.stack([s._state for s in streams], axis=1)

    def _infer_rounds(self, rounds: list[Floats], states: Floats) -> tuple[Floats, Floats]:
        """In the worker thread: the rounds in order, each row's state carried along."""
        probabilities = np.zeros(states.shape[1], dtype=np.float32)
        for windows in rounds:
            n = len(windows)
            out, new = self._model.infer_batch(windows, np.ascontiguousarray(states[:, :n]))
            probabilities[:n] = out
            states[:, :n] = new
        return probabilities, states


class BatchedSileroModel(SileroModel):
    """The shared model, with one batcher for all the calls of this process."""

    def __init__(self, threshold: float = 0.5, period_s: float = 0.02) -> None:
        super().__init__(threshold)
        self.batcher = SileroBatcher(self, period_s)

    def new_stream(self) -> BatchedSileroStream:
        return BatchedSileroStream(self)


class BatchedSileroStream(SileroStream):
    __slots__ = ("_batcher", "_in_flight")

    def __init__(self, model: BatchedSileroModel) -> None:
        super().__init__(model)
        self._batcher = model.batcher
        self._in_flight = False  # a window of ours is in the model now: our state is busy

    def speech_probability(self, pcm16: bytes) -> float:
        self._push(pcm16)
        if not self._ready() or self._in_flight:
            return self._probability
        if not self._batcher.request(self):
            return super().speech_probability(b"")
        return self._probability
