"""Signal levels in dBFS, and test tones.

dBFS follows AES17: a full-scale sine reads 0 dBFS (RMS is scaled by √2), so
``rms_dbfs(tone(f, ms, -20.0))`` reads ≈ -20.0 and the two functions agree.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from callbridge.audio import ulaw

__all__ = [
    "SILENCE_DBFS",
    "pcm_frame_levels",
    "rms_dbfs",
    "tone",
    "ulaw_frame_levels",
    "ulaw_rms_dbfs",
]

SILENCE_DBFS = -120.0
"""What digital silence (or no audio) reads: finite, so it can be compared and logged."""

_FULL_SCALE = 32768.0


def rms_dbfs(pcm16: bytes) -> float:
    """RMS level of PCM16LE audio in dBFS (AES17), never below ``SILENCE_DBFS``."""
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 input must have an even number of bytes, got {len(pcm16)}")
    if not pcm16:
        return SILENCE_DBFS
    # An exact integer sum of squares: one dot product, the cheapest numpy call for the
    # 160 samples of a frame (this runs for every caller frame of every call).
    x = np.frombuffer(pcm16, dtype="<i2").astype(np.int64)
    return _dbfs(int(x @ x), len(x))


# Squared linear value of each μ-law code: a frame's level without decoding it to PCM.
_ULAW_SQUARES = np.frombuffer(ulaw.decode(bytes(range(256))), dtype="<i2").astype(np.int64) ** 2


def ulaw_rms_dbfs(data: bytes) -> float:
    """``rms_dbfs`` of μ-law audio, read straight from the codes."""
    if not data:
        return SILENCE_DBFS
    return _dbfs(int(_ULAW_SQUARES[np.frombuffer(data, dtype=np.uint8)].sum()), len(data))


def ulaw_frame_levels(codes: npt.NDArray[np.uint8], frame_samples: int) -> list[float]:
    """``rms_dbfs`` of each frame of ``codes`` (``frame_samples`` codes each), exactly."""
    if len(codes) % frame_samples:
        raise ValueError(f"{len(codes)} codes are not whole frames of {frame_samples}")
    return pcm_frame_levels(ulaw.decode_codes(codes), frame_samples)


def pcm_frame_levels(pcm: npt.NDArray[np.int16], frame_samples: int) -> list[float]:
    """``rms_dbfs`` of each frame of ``pcm`` (``frame_samples`` samples each), exactly:
    the integer sums of squares of every frame in one numpy pass (for all the calls of a
    tick at once), then the same arithmetic as one frame's, inline (a call per frame was
    most of it). ``einsum`` over int64 rows: a third of a lookup of squared codes."""
    if len(pcm) % frame_samples:
        raise ValueError(f"{len(pcm)} samples are not whole frames of {frame_samples}")
    x = pcm.reshape(-1, frame_samples).astype(np.int64)
    sums: list[int] = np.einsum("ij,ij->i", x, x).tolist()
    sqrt, log10, n = math.sqrt, math.log10, frame_samples
    return [
        SILENCE_DBFS
        if s == 0 or (db := 20.0 * log10(sqrt(s / n) * _SQRT2 / _FULL_SCALE)) < SILENCE_DBFS
        else db
        for s in sums
    ]


_SQRT2 = math.sqrt(2.0)


def _dbfs(sum_of_squares: int, samples: int) -> float:
    if sum_of_squares == 0:
        return SILENCE_DBFS
    rms = math.sqrt(sum_of_squares / samples)
    return max(SILENCE_DBFS, 20.0 * math.log10(rms * math.sqrt(2.0) / _FULL_SCALE))


def tone(freq_hz: float, ms: int, dbfs: float, rate_hz: int = 8000) -> bytes:
    """A sine of ``freq_hz`` lasting ``ms`` at ``dbfs`` (AES17) as PCM16LE, starting at phase 0.

    Peaks are clipped to the int16 range, so 0 dBFS is the loudest clean tone.
    """
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    if not 0 < freq_hz < rate_hz / 2:
        raise ValueError(f"freq_hz must be in (0, {rate_hz / 2}) for rate {rate_hz}, got {freq_hz}")
    if ms < 0:
        raise ValueError(f"ms must be >= 0, got {ms}")
    n = rate_hz * ms // 1000
    amplitude = _FULL_SCALE * 10.0 ** (dbfs / 20.0)
    t = np.arange(n, dtype=np.float64) / rate_hz
    wave = np.rint(amplitude * np.sin(2.0 * np.pi * freq_hz * t))
    pcm: npt.NDArray[np.int16] = np.clip(wave, -32768, 32767).astype("<i2")
    return pcm.tobytes()
