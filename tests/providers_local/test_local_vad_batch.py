"""Batched Silero: all calls' windows in one run, same numbers as one call at a time."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from callbridge.audio import ulaw
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.vad.silero_batch import BatchedSileroModel
from callbridge.providers.vad.silero_model import SileroModel


def _frames(text: str) -> list[bytes]:
    pcm = ulaw.decode(ulaw.encode(synthesize_pcm(text, 8000)))
    return [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]


async def test_batched_streams_match_the_unbatched_model() -> None:
    texts = ["stop please", "I would like to check my bill", "hello there"]
    batched = BatchedSileroModel(period_s=0.002)
    plain = SileroModel()
    streams = [batched.new_stream() for _ in texts]
    references = [plain.new_stream() for _ in texts]
    feeds = [_frames(t) for t in texts]
    seen: list[list[float]] = [[] for _ in texts]
    expected: list[list[float]] = [[] for _ in texts]
    for step in range(max(len(f) for f in feeds)):
        for i, frames in enumerate(feeds):
            if step < len(frames):
                seen[i].append(streams[i].speech_probability(frames[step]))
                expected[i].append(references[i].speech_probability(frames[step]))
        await asyncio.sleep(0.006)  # the batcher runs between frames, as it would live
    await asyncio.sleep(0.02)
    for i in range(len(texts)):
        # Each stream reports every window the reference reports, one frame later at most.
        assert set(np.round(seen[i], 6)) - {0.0} <= set(np.round(expected[i], 6))
        np.testing.assert_allclose(streams[i]._state, references[i]._state, atol=1e-6)
        assert max(seen[i]) > 0.5  # it heard the speech
    assert batched.batcher.windows > batched.batcher.runs  # windows of calls shared runs


def test_without_a_running_loop_streams_run_inline() -> None:
    batched = BatchedSileroModel()
    plain = SileroModel()
    stream, reference = batched.new_stream(), plain.new_stream()
    for frame in _frames("stop please"):
        assert stream.speech_probability(frame) == reference.speech_probability(frame)
    assert batched.batcher.runs == 0


async def test_a_burst_of_frames_is_caught_up_in_batched_rounds_not_inline() -> None:
    """A loop that lagged hands over several windows of a call at once: the batcher runs
    them in order (one round per window, shared with the other calls), never one
    inline run per window on the loop."""
    batched = BatchedSileroModel(period_s=0.002)
    plain = SileroModel()
    texts = ["I would like to check my bill", "stop please"]
    streams = [batched.new_stream() for _ in texts]
    references = [plain.new_stream() for _ in texts]
    feeds = [_frames(t) for t in texts]
    inline_runs = 0
    original = SileroModel.infer_batch

    def counting(self: SileroModel, windows: np.ndarray, states: np.ndarray) -> object:
        nonlocal inline_runs
        if self is batched and threading.current_thread() is threading.main_thread():
            inline_runs += 1
        return original(self, windows, states)

    SileroModel.infer_batch = counting  # type: ignore[method-assign]
    try:
        burst = 8  # 160 ms of frames at once: 5 windows for the first call
        for start in range(0, max(len(f) for f in feeds), burst):
            for i, frames in enumerate(feeds):
                for frame in frames[start : start + burst]:
                    streams[i].speech_probability(frame)
                    references[i].speech_probability(frame)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
    finally:
        SileroModel.infer_batch = original  # type: ignore[method-assign]
    assert inline_runs == 0
    for stream, reference in zip(streams, references, strict=True):
        np.testing.assert_allclose(stream._state, reference._state, atol=1e-6)
        assert stream._probability == pytest.approx(reference._probability, abs=1e-6)
    assert batched.batcher.runs < batched.batcher.windows
