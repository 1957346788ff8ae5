"""WebRTC's GMM voice detector (``webrtcvad-wheels``): no model file, a few µs a frame.

It answers yes/no per 20 ms frame, so the probability is 0.0 or 1.0 and the threshold is
fixed at 0.5. Its per-call state is a small C struct, so each stream owns one detector;
there is nothing heavy to share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import webrtcvad
from pydantic import Field

from callbridge.audio.frames import PCM_FRAME_BYTES, SAMPLE_RATE_HZ, Framer
from callbridge.providers.registry import ProviderBlock, ProviderSpec

__all__ = ["SPEC", "WebrtcBlock", "WebrtcModel", "WebrtcStream"]

class WebrtcBlock(ProviderBlock):
    """``vad: {provider: webrtc, aggressiveness: 2}``; 0 lets most sound through, 3 least."""

    provider: Literal["webrtc"] = "webrtc"
    aggressiveness: int = Field(2, ge=0, le=3)


class WebrtcModel:
    name = "webrtc"

    def __init__(self, aggressiveness: int = 2) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be 0..3, got {aggressiveness}")
        self.aggressiveness = aggressiveness
        self.threshold = 0.5

    def new_stream(self) -> WebrtcStream:
        return WebrtcStream(self.aggressiveness)


class WebrtcStream:
    """One call's detector; buffers odd-sized input into 20 ms frames."""

    __slots__ = ("_aggressiveness", "_framer", "_probability", "_vad")

    def __init__(self, aggressiveness: int) -> None:
        self._aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)
        self._framer = Framer(PCM_FRAME_BYTES)
        self._probability = 0.0

    def speech_probability(self, pcm16: bytes) -> float:
        if len(pcm16) % 2:
            raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm16)}")
        for frame in self._framer.push(pcm16):
            self._probability = 1.0 if self._vad.is_speech(frame, SAMPLE_RATE_HZ) else 0.0
        return self._probability

    def reset(self) -> None:
        self._vad = webrtcvad.Vad(self._aggressiveness)
        self._framer.clear()
        self._probability = 0.0


def _build(block: WebrtcBlock, env: Mapping[str, str]) -> WebrtcModel:
    return WebrtcModel(block.aggressiveness)


SPEC = ProviderSpec(kind="vad", name="webrtc", config=WebrtcBlock, build=_build)
