"""The caller's front end for every call at once: one numpy pass per tick.

Per frame, a call needs its PCM (the VAD and the end-of-turn model hear it), its level
(the speech tracker's noise floor) and its speech probability. Done frame by frame on
each call's owner, that was most of the engine's cost (decode, ``rms_dbfs``, Silero's
buffering: a handful of numpy calls of ~1 µs set-up each for 160 samples). Here the
metronome hands over the new frames of every call of a tick: they are joined and
decoded with one ``take``, their levels are one sum of squares over a reshape, and a VAD
that batches (``BatchVad``: Silero) scores all of them in one run. The results are
exactly the per-frame path's (``TurnDetector.hear_frame``); tests hold them to it.

A VAD that cannot batch (webrtc, test fakes) is left to the owner, frame by frame
(``Heard.probabilities`` is None): its state is the call's and only the owner touches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from callbridge.audio import ulaw as ulaw_codec
from callbridge.audio.frames import FRAME_SAMPLES, PCM_FRAME_BYTES
from callbridge.audio.levels import ulaw_frame_levels
from callbridge.engine.transport import Heard
from callbridge.providers.base import BatchVad, VadStream

__all__ = ["Ear", "hear_all"]


@dataclass(slots=True)
class Ear:
    """One call's share of a tick: its whole 20 ms frames in order, and its VAD."""

    frames: Sequence[bytes]  # (the metronome's usual share: a tuple of one)
    stamps: Sequence[int | None]
    vad: VadStream | None
    batch_vad: BatchVad | None


def hear_all(ears: Sequence[Ear]) -> list[Heard]:
    """Each call's ``Heard`` for this tick, in the order of ``ears``."""
    codes = np.frombuffer(b"".join(chain.from_iterable(ear.frames for ear in ears)), np.uint8)
    pcm = ulaw_codec.decode_codes(codes)
    levels = ulaw_frame_levels(codes, FRAME_SAMPLES)
    pcm_bytes = pcm.tobytes()
    firsts: list[int] = []
    batches: dict[BatchVad, list[tuple[VadStream, int, int]]] = {}
    first = 0
    for ear in ears:
        firsts.append(first)
        count, model = len(ear.frames), ear.batch_vad
        if model is not None and ear.vad is not None and count:
            calls = batches.get(model)
            if calls is None:
                calls = batches[model] = []
            calls.append((ear.vad, first, count))
        first += count
    if len(batches) == 1:  # the usual case: one model, its answer serves every frame
        ((model, calls),) = batches.items()
        scores = model.score_frames(pcm, calls)
    else:
        scores = [0.0] * first
        for model, calls in batches.items():
            scored = model.score_frames(pcm, calls)
            for _, start, count in calls:
                scores[start : start + count] = scored[start : start + count]
    heard: list[Heard] = []
    append = heard.append
    for ear, start in zip(ears, firsts, strict=True):
        frames, stamps, batched = ear.frames, ear.stamps, ear.batch_vad is not None
        if len(frames) == 1:  # the usual share: one frame a beat, no slices to copy
            append(
                Heard(
                    frames if type(frames) is tuple else (frames[0],),
                    stamps if type(stamps) is tuple else (stamps[0],),
                    pcm_bytes[start * PCM_FRAME_BYTES : (start + 1) * PCM_FRAME_BYTES],
                    (levels[start],),
                    (scores[start],) if batched else None,
                )
            )
            continue
        end = start + len(frames)
        append(
            Heard(
                tuple(frames),
                tuple(stamps),
                pcm_bytes[start * PCM_FRAME_BYTES : end * PCM_FRAME_BYTES],
                tuple(levels[start:end]),
                tuple(scores[start:end]) if batched else None,
            )
        )
    return heard
