"""Silero and WebRTC VAD on espeak speech, silence and line noise; Silero's sharing rules."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from callbridge.providers.base import VadStream
from callbridge.providers.registry import build_provider, spec_for
from callbridge.providers.vad.silero import SileroBlock
from callbridge.providers.vad.silero_batch import BatchedSileroModel
from callbridge.providers.vad.silero_model import SileroModel, load_session
from callbridge.providers.vad.webrtc import WebrtcBlock, WebrtcModel
from providers_local.helpers import frames


@pytest.fixture(scope="module")
def silero() -> SileroModel:
    return SileroModel()


def _run(stream: VadStream, pcm16: bytes) -> list[float]:
    return [stream.speech_probability(f) for f in frames(pcm16)]


# ---------------------------------------------------------------- Silero


def test_silero_hears_speech(silero: SileroModel, speech_pcm: bytes) -> None:
    probabilities = np.array(_run(silero.new_stream(), speech_pcm))
    # The sentence has short gaps between words; most of it is still speech.
    assert (probabilities > silero.threshold).mean() > 0.7
    assert probabilities.max() > 0.9


@pytest.mark.parametrize("fixture", ["silence_pcm", "low_noise_pcm"])
def test_silero_ignores_silence_and_hiss(
    silero: SileroModel, fixture: str, request: pytest.FixtureRequest
) -> None:
    probabilities = _run(silero.new_stream(), request.getfixturevalue(fixture))
    assert max(probabilities) < silero.threshold


def test_silero_reports_latest_window_until_a_new_one_completes(
    silero: SileroModel, speech_pcm: bytes
) -> None:
    stream = silero.new_stream()
    f = frames(speech_pcm)
    # 256-sample windows over 160-sample frames: frame 1 completes none, frame 2 one.
    assert stream.speech_probability(f[0]) == 0.0
    second = stream.speech_probability(f[1])
    assert second > 0.0
    assert stream.speech_probability(f[2]) == second  # 480 samples: still one window


def test_silero_streams_share_one_model_and_session(silero: SileroModel) -> None:
    a, b = silero.new_stream(), silero.new_stream()
    assert a.model is b.model is silero
    assert SileroModel(0.7).session is silero.session is load_session()


def test_silero_stream_states_are_independent(
    silero: SileroModel, speech_pcm: bytes, silence_pcm: bytes
) -> None:
    alone = _run(silero.new_stream(), silence_pcm)
    talker, quiet = silero.new_stream(), silero.new_stream()
    interleaved = []
    for speech_frame, silent_frame in zip(frames(speech_pcm), frames(silence_pcm), strict=False):
        talker.speech_probability(speech_frame)
        interleaved.append(quiet.speech_probability(silent_frame))
    assert interleaved == pytest.approx(alone[: len(interleaved)], abs=1e-6)


def test_silero_reset_starts_over(silero: SileroModel, speech_pcm: bytes) -> None:
    stream = silero.new_stream()
    first = _run(stream, speech_pcm)
    stream.reset()
    assert _run(stream, speech_pcm) == pytest.approx(first, abs=1e-6)


def test_silero_batch_matches_one_by_one(
    silero: SileroModel, speech_pcm: bytes, low_noise_pcm: bytes, silence_pcm: bytes
) -> None:
    inputs = [frames(speech_pcm), frames(low_noise_pcm), frames(silence_pcm)]
    n = min(len(f) for f in inputs)
    single = [_run(silero.new_stream(), b"".join(f[:n])) for f in inputs]
    streams = [silero.new_stream() for _ in inputs]
    batched: list[list[float]] = [[], [], []]
    for i in range(n):
        pairs = [(s, f[i]) for s, f in zip(streams, inputs, strict=True)]
        for j, p in enumerate(silero.process_batch(pairs)):
            batched[j].append(p)
    for one, many in zip(single, batched, strict=True):
        assert many == pytest.approx(one, abs=1e-4)


def test_silero_infer_batch_rows_use_their_own_state(silero: SileroModel) -> None:
    rng = np.random.default_rng(3)
    windows = (rng.standard_normal((2, 288)) * 0.1).astype(np.float32)
    states = (rng.standard_normal((2, 2, 128)) * 0.1).astype(np.float32)
    both, both_states = silero.infer_batch(windows, states)
    for row in range(2):
        one, one_state = silero.infer_batch(windows[row : row + 1], states[:, row : row + 1])
        assert one[0] == pytest.approx(both[row], abs=1e-5)
        assert np.allclose(one_state[:, 0], both_states[:, row], atol=1e-5)


def test_silero_rejects_half_samples(silero: SileroModel) -> None:
    with pytest.raises(ValueError, match="even number"):
        silero.new_stream().speech_probability(b"\0" * 321)


def test_silero_block_and_registry() -> None:
    block = spec_for("vad", "silero").config.model_validate({"provider": "silero"})
    assert isinstance(block, SileroBlock) and block.threshold == 0.5
    model = build_provider("vad", SileroBlock(threshold=0.6), {})
    assert isinstance(model, BatchedSileroModel) and model.threshold == 0.6
    plain = build_provider("vad", SileroBlock(threshold=0.6, batch=False), {})
    assert isinstance(plain, SileroModel) and plain.threshold == 0.6
    for bad in ({"threshold": 1.5}, {"threshold": 0}, {"thresold": 0.5}):
        with pytest.raises(ValidationError):
            SileroBlock.model_validate({"provider": "silero", **bad})


# ---------------------------------------------------------------- WebRTC


def test_webrtc_hears_speech_not_silence(speech_pcm: bytes, silence_pcm: bytes) -> None:
    model = WebrtcModel(2)
    speech = np.array(_run(model.new_stream(), speech_pcm))
    assert set(speech.tolist()) <= {0.0, 1.0}
    assert (speech > model.threshold).mean() > 0.7
    assert max(_run(model.new_stream(), silence_pcm)) == 0.0


def test_webrtc_mostly_ignores_hiss(low_noise_pcm: bytes) -> None:
    model = WebrtcModel(3)
    assert np.mean(_run(model.new_stream(), low_noise_pcm)) < 0.2


def test_webrtc_buffers_odd_sized_chunks(speech_pcm: bytes, silence_pcm: bytes) -> None:
    model = WebrtcModel(2)
    audio = speech_pcm[: len(speech_pcm) // 960 * 960] + silence_pcm  # whole 60 ms groups
    whole = _run(model.new_stream(), audio)
    stream = model.new_stream()
    chunked = []
    data = audio
    for i in range(0, len(data), 480):  # 30 ms chunks: a frame and a half each
        chunked.append(stream.speech_probability(data[i : i + 480]))
    # After chunk k, 480 * (k + 1) bytes = floor(1.5 * (k + 1)) whole frames were decided.
    expected = [whole[(3 * (k + 1)) // 2 - 1] for k in range(len(chunked))]
    assert chunked == expected
    assert 0.0 in expected and 1.0 in expected


def test_webrtc_block_validation() -> None:
    assert WebrtcBlock.model_validate({"provider": "webrtc"}).aggressiveness == 2
    model = build_provider("vad", WebrtcBlock(aggressiveness=0), {})
    assert isinstance(model, WebrtcModel) and model.aggressiveness == 0
    with pytest.raises(ValidationError):
        WebrtcBlock.model_validate({"provider": "webrtc", "aggressiveness": 4})
    with pytest.raises(ValidationError):
        WebrtcBlock.model_validate({"provider": "webrtc", "threshold": 0.3})
