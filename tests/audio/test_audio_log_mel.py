"""The Smart Turn features against a slow, literal reading of Whisper's recipe
(``support.whisper_reference``). The fast path (vectorised, padding frames transformed
once) must agree with it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from support.whisper_reference import HOP, RATE, slow_log_mel

from callbridge.audio.log_mel import log_mel


def _speechlike(seconds: float, seed: int) -> npt.NDArray[np.float32]:
    """Voiced bursts: a wandering pitch with harmonics, amplitude-modulated, some noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None)
    return (0.3 * voiced * envelope + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def _front_padded(speech: npt.NDArray[np.float32], total: int) -> npt.NDArray[np.float32]:
    return np.pad(speech, (total - len(speech), 0))


@pytest.mark.parametrize(
    "audio",
    [
        np.random.default_rng(3).standard_normal(8 * RATE).astype(np.float32) * 0.1,
        _front_padded(_speechlike(2.0, 4), 8 * RATE),  # a short turn: mostly padding
        _front_padded(_speechlike(7.9, 5), 8 * RATE),
        _front_padded(_speechlike(0.05, 6), RATE),  # almost all padding
    ],
    ids=["noise-8s", "turn-2s-in-8s", "turn-7.9s-in-8s", "blip-in-1s"],
)
def test_features_match_a_literal_reading_of_the_recipe(audio: npt.NDArray[np.float32]) -> None:
    fast = log_mel(audio)
    slow = slow_log_mel(audio)
    assert fast.shape == slow.shape == (80, len(audio) // HOP)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-5)


@pytest.mark.parametrize("lead", [0, 1, 199, 200, 201, 359, 360, 361, 519, 520, 4000])
def test_padding_frames_are_shared_exactly_at_every_boundary(lead: int) -> None:
    """Frames wholly in the leading zeros are transformed once: the frame just past the
    boundary (which sees one real sample) must still be its own."""
    rng = np.random.default_rng(lead)
    audio = np.concatenate([np.zeros(lead, np.float32),
                            rng.standard_normal(RATE).astype(np.float32) * 0.2])
    np.testing.assert_allclose(log_mel(audio), slow_log_mel(audio), rtol=0, atol=1e-5)


def test_silence_alone_is_one_repeated_frame() -> None:
    features = log_mel(np.zeros(RATE, np.float32))
    assert features.shape == (80, 100)
    assert np.all(features == features[:, :1])
