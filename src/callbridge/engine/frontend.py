"""The caller's front end for every call at once: one numpy pass per tick.

Per frame, a call needs its PCM (the VAD and the end-of-turn model hear it), its level
(the speech tracker's noise floor) and its speech probability. Done frame by frame on
each call's owner, that was most of the engine's cost (decode, ``rms_dbfs``, Silero's
buffering: a handful of numpy calls of ~1 µs set-up each for 160 samples). Here the
metronome hands over the new frames of every call of a tick: they are joined and
decoded with one ``take`` (two codes a lookup), their levels are one sum of squares
over a reshape (``einsum``, then the dBFS arithmetic inline), and a VAD
that batches (``BatchVad``: Silero) scores all of them in one run. The results are
exactly the per-frame path's (``TurnDetector.hear_frame``); tests hold them to it.

A VAD that cannot batch (webrtc, test fakes) is left to the owner, frame by frame
(``Heard.probabilities`` is None): its state is the call's and only the owner touches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from callbridge.audio import ulaw as ulaw_codec
from callbridge.audio.frames import FRAME_SAMPLES, PCM_FRAME_BYTES
from callbridge.audio.levels import pcm_frame_levels
from callbridge.engine.transport import Heard
from callbridge.providers.base import BatchVad, VadStream

__all__ = ["Ear", "hear_all"]


class Ear(NamedTuple):
    """One call's share of a tick: its whole 20 ms frames in order, and its VAD. A
    ``NamedTuple`` like ``Heard``: the metronome makes one per hearing call per beat."""

    frames: Sequence[bytes]  # (the metronome's usual share: a tuple of one)
    stamps: Sequence[int | None]
    vad: VadStream | None
    batch_vad: BatchVad | None


# ``tuple.__new__(Heard, (...))``: a NamedTuple's own ``__new__`` is a Python function,
# a frame per call per beat for nothing (the fields are in order).
_new = tuple.__new__
_frames_of = itemgetter(0)


def hear_all(ears: Sequence[Ear]) -> list[Heard]:
    """Each call's ``Heard`` for this tick, in the order of ``ears``."""
    codes = np.frombuffer(b"".join(chain.from_iterable(map(_frames_of, ears))), np.uint8)
    pcm = ulaw_codec.decode_codes(codes)
    levels = pcm_frame_levels(pcm, FRAME_SAMPLES)
    pcm_bytes = pcm.tobytes()
    batches: dict[BatchVad, list[tuple[VadStream, int, int]]] = {}
    first = 0
    for frames, _, vad, model in ears:
        count = len(frames)
        if model is not None and vad is not None and count:
            calls = batches.get(model)
            if calls is None:
                calls = batches[model] = []
            calls.append((vad, first, count))
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
    start = 0
    for frames, stamps, _, model in ears:
        if len(frames) == 1:  # the usual share: one frame a beat, no slices to copy
            at = start * PCM_FRAME_BYTES
            append(
                _new(
                    Heard,
                    (
                        frames if type(frames) is tuple else (frames[0],),
                        stamps if type(stamps) is tuple else (stamps[0],),
                        pcm_bytes[at : at + PCM_FRAME_BYTES],
                        (levels[start],),
                        None if model is None else (scores[start],),
                    ),
                )
            )
            start += 1
            continue
        end = start + len(frames)
        append(
            Heard(
                tuple(frames),
                tuple(stamps),
                pcm_bytes[start * PCM_FRAME_BYTES : end * PCM_FRAME_BYTES],
                tuple(levels[start:end]),
                None if model is None else tuple(scores[start:end]),
            )
        )
        start = end
    return heard
