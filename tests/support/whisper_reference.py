"""A slow, literal reading of Whisper's log-mel recipe (the ``WhisperFeatureExtractor``
that Smart Turn v3 was trained on): every frame cut by hand with its reflect padding, a
plain DFT instead of an FFT, the mel filters from the Slaney formulas one by one. The
production features (``callbridge.audio.log_mel``) are checked against it."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import numpy.typing as npt

__all__ = ["HOP", "RATE", "slow_log_mel"]

RATE, N_FFT, HOP, MELS = 16000, 400, 160, 80


def _hz_to_mel(hz: float) -> float:
    return 3.0 * hz / 200.0 if hz < 1000.0 else 15.0 + math.log(hz / 1000.0) * 27.0 / math.log(6.4)


def _mel_to_hz(mel: float) -> float:
    return 200.0 * mel / 3.0 if mel < 15.0 else 1000.0 * math.exp(math.log(6.4) / 27.0 * (mel - 15))


@cache
def _filters() -> npt.NDArray[np.float64]:
    top = _hz_to_mel(RATE / 2)
    edges = [_mel_to_hz(top * i / (MELS + 1)) for i in range(MELS + 2)]
    bank = np.zeros((N_FFT // 2 + 1, MELS))
    for m in range(MELS):
        low, centre, high = edges[m], edges[m + 1], edges[m + 2]
        for k in range(N_FFT // 2 + 1):
            f = k * RATE / N_FFT
            weight = min((f - low) / (centre - low), (high - f) / (high - centre))
            bank[k, m] = max(0.0, weight) * 2.0 / (high - low)
    return bank


def slow_log_mel(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    x = audio.astype(np.float32)
    x = ((x - x.mean()) / np.sqrt(x.var() + np.float32(1e-7))).astype(np.float64)
    n = len(x)
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / N_FFT) for i in range(N_FFT)])
    dft = np.exp(-2j * np.pi * np.outer(np.arange(N_FFT), np.arange(N_FFT // 2 + 1)) / N_FFT)
    bank = _filters()
    columns = []
    for start in range(0, n + 1, HOP):  # centred: frame t covers t-200 … t+199
        index = [abs(t) if t < 0 else (2 * (n - 1) - t if t >= n else t)
                 for t in range(start - N_FFT // 2, start + N_FFT // 2)]
        spectrum = (x[index] * window) @ dft
        power = np.abs(spectrum) ** 2
        columns.append(np.log10(np.maximum(power @ bank, 1e-10)))
    mel = np.array(columns).T[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    return (mel + 4.0) / 4.0
