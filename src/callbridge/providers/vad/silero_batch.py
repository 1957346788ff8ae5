"""Runs every call's Silero windows together: one model run per tick for all calls.

One window at a time costs ~130 µs, almost all of it onnxruntime's per-run overhead; in
a batch of a hundred it costs ~30 µs. At 200 calls that is the difference between more
than a whole core and a fifth of one (bench/vad.py).

How it works: a call's stream buffers its 20 ms frames and, when a 32 ms window is
complete, asks the process's batcher for a run and keeps answering with its latest
probability. The batcher wakes every ``period_s``, copies the ready windows of all
calls into one array on the event loop's thread, runs the model in a worker thread (the
loop keeps serving calls meanwhile; onnxruntime releases the GIL) and writes the results
back on the loop's thread, so no stream is ever touched from two threads. A verdict is
at most about one period late; the engine's speech tracker dates runs back over that
lag. Without a running event loop (scripts, benchmarks) streams run inline.
"""

from __future__ import annotations

import asyncio
import logging

from callbridge.providers.vad.silero import (
    CONTEXT_SAMPLES,
    WINDOW_SAMPLES,
    SileroModel,
    SileroStream,
)

__all__ = ["BatchedSileroModel", "BatchedSileroStream", "SileroBatcher"]

log = logging.getLogger(__name__)

_MAX_BACKLOG_WINDOWS = 3  # a stream this far behind runs inline rather than fall further


class SileroBatcher:
    def __init__(self, model: SileroModel, period_s: float = 0.02) -> None:
        self._model = model
        self._period_s = period_s
        self._ready: dict[BatchedSileroStream, None] = {}  # ordered set
        self._task: asyncio.Task[None] | None = None
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
            windows, states = self._model.gather(streams)
            for stream in streams:
                stream._in_flight = True
            try:
                probabilities, new_states = await loop.run_in_executor(
                    None, self._model.infer_batch, windows, states
                )
            finally:
                for stream in streams:
                    stream._in_flight = False
            self._model.scatter(streams, probabilities, new_states)
            for stream in streams:
                if stream._ready():  # more than one window was waiting
                    self._ready[stream] = None
            self.runs += 1
            self.windows += len(streams)


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
        backlog = (self._filled - CONTEXT_SAMPLES) // WINDOW_SAMPLES
        if backlog >= _MAX_BACKLOG_WINDOWS or not self._batcher.request(self):
            return super().speech_probability(b"")
        return self._probability
