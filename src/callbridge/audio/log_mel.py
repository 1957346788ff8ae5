"""Whisper's log-mel spectrogram (80 bands, 25 ms windows every 10 ms, 16 kHz), in numpy.

End-of-turn models built on Whisper's encoder (Smart Turn v3) take exactly the features
of Hugging Face's ``WhisperFeatureExtractor``: the waveform normalised to zero mean and
unit variance (in float32), a centred STFT (reflect padding, periodic Hann window) as
power in float64, a Slaney-style mel filter bank, ``log10`` floored at 1e-10, the last
frame dropped, values clamped to 8 (i.e. 80 dB) below the peak and scaled by
``(x + 4) / 4``. This is that recipe, written from its definition; no ``transformers``
or ``torch``.

Cost: a turn shorter than the window arrives zero-padded in front, and every frame that
lies wholly in that padding is the same frame. It is transformed once and repeated, so a
2 s turn in an 8 s window costs a quarter of the transforms (same numbers, not an
approximation: identical input rows give identical output rows).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["N_MELS", "RATE_HZ", "log_mel"]

RATE_HZ = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
_EDGE = N_FFT // 2  # the centred STFT's reflect padding on each side

Floats = npt.NDArray[np.float32]


def log_mel(audio: npt.NDArray[np.floating], *, normalize: bool = True) -> Floats:
    """``audio`` (16 kHz, any length > 200 samples) → features ``(80, len // 160)``."""
    x = np.asarray(audio, dtype=np.float32)
    lead = _leading_zeros(x)
    if normalize:
        x = (x - x.mean()) / np.sqrt(x.var() + np.float32(1e-7))
    padded = np.pad(x.astype(np.float64), _EDGE, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    same = _same_leading_frames(lead, len(frames))
    if same > 1:  # transform one of the identical frames, and the rest
        frames = frames[same - 1 :]
    spectrum = np.fft.rfft(frames * _WINDOW, axis=1)  # (frames, N_FFT/2 + 1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = np.log10(np.maximum(power @ _FILTERS, 1e-10))  # (frames, N_MELS)
    if same > 1:
        mel = np.concatenate([np.repeat(mel[:1], same - 1, axis=0), mel])
    mel = mel[:-1].T
    mel = np.maximum(mel, mel.max() - 8.0)
    features: Floats = ((mel + 4.0) / 4.0).astype(np.float32)
    return features


def _leading_zeros(x: npt.NDArray[np.float32]) -> int:
    nonzero = np.flatnonzero(x)
    return int(nonzero[0]) if len(nonzero) else len(x)


def _same_leading_frames(lead: int, count: int) -> int:
    """How many leading frames see only the first ``lead`` samples (all equal).

    Frame ``i`` covers samples ``160 i - 200 … 160 i + 199``; the reflect padding mirrors
    samples 1…200 in front of the first ones, so frame 0 needs ``lead > 200``.
    """
    if lead <= _EDGE:
        return 0
    return min(count, (lead - 1 - (N_FFT - 1 - _EDGE)) // HOP + 1)


def _slaney_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Hz → mel on the Slaney scale: linear below 1 kHz, logarithmic above."""
    linear = hz / (200.0 / 3.0)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz < 1000.0, linear, log_part)


def _slaney_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = mel * (200.0 / 3.0)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel < 15.0, linear, log_part)


def _filter_bank() -> npt.NDArray[np.float64]:
    """Triangular filters, evenly spaced in mel from 0 Hz to Nyquist, each scaled to unit
    area (Slaney normalisation); shape ``(N_FFT/2 + 1, N_MELS)``."""
    bins = np.linspace(0.0, RATE_HZ / 2, N_FFT // 2 + 1)
    edges_mel = np.linspace(0.0, float(_slaney_mel(np.array([RATE_HZ / 2.0]))[0]), N_MELS + 2)
    edges = _slaney_hz(edges_mel)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - bins[:, None]) / (upper - centre)[None, :]
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return np.asarray(triangles * (2.0 / (upper - lower))[None, :], dtype=np.float64)


_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
_FILTERS = _filter_bank()
