"""Sample-rate conversion of PCM16 mono with soxr.

Only audio that is not already 8 kHz comes through here (OpenAI-style TTS at 24 kHz,
WAV prompts). Same-rate input is passed through untouched, so the 8 kHz μ-law path
never pays for a resampler. A streaming soxr resampler holds samples back (its filter
delay: ~60 ms at HQ for 24→8 kHz, more for upsampling), so ``process`` may return
nothing; pacing must never wait on it (Pipecat #5592) and ``flush`` drains the rest.
"""

from __future__ import annotations

import logging

import numpy as np
import soxr

__all__ = ["DEFAULT_QUALITY", "StreamResampler", "resample"]

log = logging.getLogger(__name__)

DEFAULT_QUALITY = "HQ"
"""soxr recipe; "QQ" (quick cubic) holds back almost nothing but aliases more."""

_QUALITIES = frozenset({"QQ", "LQ", "MQ", "HQ", "VHQ"})


def resample(pcm16: bytes, from_hz: int, to_hz: int, quality: str = DEFAULT_QUALITY) -> bytes:
    """Resample a whole PCM16LE mono clip in one go (no held-back tail)."""
    _check_rates(from_hz, to_hz, quality)
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 input must have an even number of bytes, got {len(pcm16)}")
    if from_hz == to_hz or not pcm16:
        return bytes(pcm16)
    x = np.frombuffer(pcm16, dtype="<i2").astype(np.int16)
    y = soxr.resample(x, from_hz, to_hz, quality=quality)
    return np.asarray(y, dtype="<i2").tobytes()


class StreamResampler:
    """Resample a PCM16LE mono stream chunk by chunk, keeping filter state between chunks.

    Chunks may have any byte length: a trailing half sample is kept for the next
    chunk, because network reads do not respect sample boundaries.
    """

    __slots__ = ("_carry", "_stream", "from_hz", "quality", "to_hz")

    def __init__(self, from_hz: int, to_hz: int, quality: str = DEFAULT_QUALITY) -> None:
        _check_rates(from_hz, to_hz, quality)
        self.from_hz = from_hz
        self.to_hz = to_hz
        self.quality = quality
        self._stream = self._new_stream()
        self._carry = b""

    def process(self, pcm16: bytes) -> bytes:
        """Feed a chunk; return whatever output is ready (often b"" early on)."""
        data = self._carry + pcm16 if self._carry else bytes(pcm16)
        cut = len(data) - len(data) % 2
        self._carry = data[cut:]
        if cut == 0:
            return b""
        if self._stream is None:
            return data[:cut]
        x = np.frombuffer(data, dtype="<i2", count=cut // 2).astype(np.int16)
        return np.asarray(self._stream.resample_chunk(x), dtype="<i2").tobytes()

    def flush(self) -> bytes:
        """Drain the held-back tail; the resampler is then ready for a new stream."""
        if self._carry:
            log.warning("resample.half_sample_dropped bytes=%d", len(self._carry))
            self._carry = b""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._stream = self._new_stream()
        return np.asarray(tail, dtype="<i2").tobytes()

    def reset(self) -> None:
        """Forget buffered audio without emitting it (barge-in: it will never play)."""
        self._carry = b""
        self._stream = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream | None:
        # A new stream rather than ResampleStream.clear(): after clear() soxr's int16
        # rounding state differs (±2 LSB), and a fresh one costs the same (~50 µs).
        if self.from_hz == self.to_hz:
            return None
        return soxr.ResampleStream(self.from_hz, self.to_hz, 1, dtype="int16", quality=self.quality)


def _check_rates(from_hz: int, to_hz: int, quality: str) -> None:
    if from_hz <= 0 or to_hz <= 0:
        raise ValueError(f"sample rates must be positive, got {from_hz} -> {to_hz}")
    if quality not in _QUALITIES:
        raise ValueError(f"quality must be one of {sorted(_QUALITIES)}, got {quality!r}")
