"""Whisper's log-mel spectrogram (80 bands, 25 ms windows every 10 ms, 16 kHz), in numpy.

End-of-turn models built on Whisper's encoder (Smart Turn v3) take exactly the features
of Hugging Face's ``WhisperFeatureExtractor``: the waveform normalised to zero mean and
unit variance, a centred STFT (reflect padding, periodic Hann window) as power, a
Slaney-style mel filter bank, ``log10`` floored at 1e-10, the last frame dropped, values
clamped to 8 (i.e. 80 dB) below the peak and scaled by ``(x + 4) / 4``. This is that
recipe, written from its definition; no ``transformers`` or ``torch``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["N_MELS", "RATE_HZ", "log_mel"]

RATE_HZ = 16000
N_FFT = 400
HOP = 160
N_MELS = 80

Floats = npt.NDArray[np.float32]


def log_mel(audio: npt.NDArray[np.floating], *, normalize: bool = True) -> Floats:
    """``audio`` (16 kHz, any length) → features of shape ``(80, len // 160)``."""
    x = np.asarray(audio, dtype=np.float64)
    if normalize:
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    count = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(count, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0])
    )
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2  # (frames, N_FFT/2 + 1)
    mel = np.log10(np.maximum(power @ _FILTERS, 1e-10)).T[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    features: Floats = ((mel + 4.0) / 4.0).astype(np.float32)
    return features


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
