"""Batched Silero: all calls' windows in one run, same numbers as one call at a time."""

from __future__ import annotations

import asyncio

import numpy as np

from callbridge.audio import ulaw
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.vad.silero import SileroModel
from callbridge.providers.vad.silero_batch import BatchedSileroModel


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
