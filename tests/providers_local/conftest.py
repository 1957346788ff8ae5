"""Shared audio for the local-provider tests: made with espeak at test time, not stored."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.audio import ulaw
from callbridge.providers.tts.espeak import synthesize_pcm


@pytest.fixture(scope="session")
def speech_pcm() -> bytes:
    """A caller's sentence as it arrives from the phone line: 8 kHz, through μ-law."""
    pcm = synthesize_pcm("Hello, I would like to check my billing statement please.")
    return ulaw.decode(ulaw.encode(pcm))


@pytest.fixture(scope="session")
def low_noise_pcm() -> bytes:
    """Two seconds of white noise at -50 dBFS: line hiss, not a voice."""
    rng = np.random.default_rng(7)
    samples = rng.standard_normal(16000) * 32768 * 10 ** (-50 / 20)
    return samples.astype("<i2").tobytes()


@pytest.fixture(scope="session")
def silence_pcm() -> bytes:
    return bytes(32000)
