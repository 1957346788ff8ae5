"""The flat 8 kHz Silero graph against the model file as shipped: the same probabilities
and recurrent states on speech, noise and silence, window after window with the state
carried, every row of a batch on its own; and a shipped file it does not understand is a
``ConfigError``, never a detector that scores wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from callbridge.audio import ulaw
from callbridge.errors import ConfigError
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.vad.silero_batch import BatchedSileroModel
from callbridge.providers.vad.silero_graph import flat_model
from callbridge.providers.vad.silero_model import (
    SileroModel,
    default_model_path,
    load_session,
    load_shipped_session,
    model_feeds,
)
from providers_local.helpers import frames

Floats = np.ndarray
Run = Callable[[Floats, Floats], tuple[Floats, Floats]]
ROW = 288
HOP = 256


def _runner(session: ort.InferenceSession) -> Run:
    feeds = model_feeds(session)

    def run(windows: Floats, states: Floats) -> tuple[Floats, Floats]:
        out, state = session.run(["output", "stateN"], {**feeds, "input": windows, "state": states})
        return np.asarray(out), np.asarray(state)

    return run


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    serialized = model.SerializeToString()
    return ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])


def _phone(text: str) -> Floats:
    pcm = ulaw.decode(ulaw.encode(synthesize_pcm(text)))
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768


@pytest.fixture(scope="module")
def corpus() -> Floats:
    """≈20 s: phone-line speech, pauses, hiss, loud noise, speech over noise, clipping."""
    rng = np.random.default_rng(13)
    speech = [
        _phone("Hello, I would like to check my billing statement please."),
        _phone("No, stop. Wait a second, that is not what I asked for."),
        _phone("My account number is four seven one, two nine, eight eight."),
    ]
    hiss = (rng.standard_normal(16000) * 10 ** (-50 / 20)).astype(np.float32)
    loud = (rng.standard_normal(16000) * 0.1).astype(np.float32)
    parts = [
        speech[0],
        np.zeros(8000, np.float32),
        hiss,
        speech[1] + (rng.standard_normal(len(speech[1])) * 0.02).astype(np.float32),
        loud,
        speech[2] * 0.2,  # a quiet talker
        np.clip(rng.standard_normal(8000).astype(np.float32), -1, 1),
        speech[0],
        np.zeros(4000, np.float32),
    ]
    return np.concatenate(parts).astype(np.float32)


def _rows(corpus: Floats, batch: int) -> Floats:
    """``batch`` rows of the corpus, each starting elsewhere (row i: a different call)."""
    return np.stack([np.roll(corpus, -3001 * i) for i in range(batch)])


def _compare(
    a: Run, b: Run, audio: Floats, *, windows: int | None = None
) -> tuple[float, float, int, int]:
    """Run both over ``audio`` (B, samples) window by window with each one's own state
    carried; max |Δp|, max |Δstate| relative to the state's scale, flipped decisions at
    0.5, windows."""
    batch = len(audio)
    count = (audio.shape[1] - ROW) // HOP + 1 if windows is None else windows
    state_a = np.zeros((2, batch, 128), np.float32)
    state_b = state_a.copy()
    worst_p = worst_state = 0.0
    flips = 0
    for k in range(count):
        window = np.ascontiguousarray(audio[:, k * HOP : k * HOP + ROW])
        p_a, state_a = a(window, state_a)
        p_b, state_b = b(window, state_b)
        worst_p = max(worst_p, float(np.abs(p_a - p_b).max()))
        scale = 1.0 + float(np.abs(state_a).max())  # the cell state grows to ~30 in speech
        worst_state = max(worst_state, float(np.abs(state_a - state_b).max()) / scale)
        flips += int(np.count_nonzero((p_a > 0.5) != (p_b > 0.5)))
    return worst_p, worst_state, flips, count * batch


@pytest.fixture(scope="module")
def shipped() -> Run:
    return _runner(load_shipped_session())


@pytest.mark.parametrize("batch", [1, 7])
def test_flat_graph_scores_as_the_shipped_model(shipped: Run, corpus: Floats, batch: int) -> None:
    flat = _runner(load_session())
    worst_p, worst_state, flips, windows = _compare(shipped, flat, _rows(corpus, batch))
    assert windows > 600 * batch  # ≈20 s of audio per row
    assert worst_p < 1e-5
    assert worst_state < 1e-5
    assert flips == 0


def test_the_corpus_has_both_verdicts(shipped: Run, corpus: Floats) -> None:
    """The equivalence above means something: the corpus crosses 0.5 both ways."""
    state = np.zeros((2, 1, 128), np.float32)
    probabilities = []
    for k in range((len(corpus) - ROW) // HOP + 1):
        p, state = shipped(corpus[np.newaxis, k * HOP : k * HOP + ROW].copy(), state)
        probabilities.append(float(p[0, 0]))
    speech = np.array(probabilities) > 0.5
    assert 0.2 < speech.mean() < 0.8


def test_the_flat_graph_is_flat() -> None:
    model = flat_model(default_model_path())
    ops = {node.op_type for node in model.graph.node}
    assert "If" not in ops and "Conv" not in ops
    assert [i.name for i in model.graph.input] == ["input", "state"]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == [ROW]


def _float_initializers() -> list[str]:
    model = flat_model(default_model_path())
    return [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]


@pytest.mark.parametrize("name", _float_initializers())
def test_a_wrong_weight_is_caught(shipped: Run, corpus: Floats, name: str) -> None:
    """Every weight matters to the comparison: 1 % off anywhere fails it."""
    model = flat_model(default_model_path())
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 1.01, name))
    worst_p, worst_state, _, _ = _compare(
        shipped, _runner(_session(model)), _rows(corpus, 2), windows=200
    )
    assert max(worst_p, worst_state) > 1e-4


def _zero_pad(model: onnx.ModelProto) -> None:
    """Zero padding instead of reflection: only the last STFT frame changes."""
    pad = next(n for n in model.graph.node if n.op_type == "Pad")
    pad.ClearField("attribute")
    pad.attribute.append(helper.make_attribute("mode", "constant"))


def _frames_swapped(model: onnx.ModelProto) -> None:
    """Each STFT frame's two hops in the wrong order: same shapes, wrong frames."""
    concat = next(n for n in model.graph.node if "frames" in n.output)
    concat.input[:] = list(reversed(concat.input))


def _conv_reads_a_frame_early(model: onnx.ModelProto) -> None:
    """The first layer's second half reading input frames 0–2 instead of 1–3."""
    for tensor in model.graph.initializer:
        if tensor.name in ("enc0_1_from", "enc0_1_to"):
            shifted = numpy_helper.to_array(tensor) - 65
            tensor.CopyFrom(numpy_helper.from_array(shifted, tensor.name))


@pytest.mark.parametrize("change", [_zero_pad, _frames_swapped, _conv_reads_a_frame_early])
def test_a_wrong_layout_is_caught(
    shipped: Run, corpus: Floats, change: Callable[[onnx.ModelProto], None]
) -> None:
    model = flat_model(default_model_path())
    change(model)
    worst_p, worst_state, _, _ = _compare(
        shipped, _runner(_session(model)), _rows(corpus, 2), windows=200
    )
    assert max(worst_p, worst_state) > 1e-4


def test_the_shipped_session_still_drives_the_models(speech_pcm: bytes) -> None:
    """A session given to the models may be the file as shipped (it takes ``sr``): the
    same probabilities per frame as the default flat graph."""
    flat, shipped_model = SileroModel(), SileroModel(session=load_shipped_session())
    batched = BatchedSileroModel(session=load_shipped_session())
    a, b, c = flat.new_stream(), shipped_model.new_stream(), batched.new_stream()
    for frame in frames(speech_pcm):
        want = b.speech_probability(frame)
        assert a.speech_probability(frame) == pytest.approx(want, abs=1e-5)
        assert c.speech_probability(frame) == pytest.approx(want, abs=1e-6)


# ---------------------------------------------------------------- files it must refuse


def _shipped_copy(tmp_path: Path, change: Callable[[onnx.GraphProto], None]) -> Path:
    model = onnx.load(str(default_model_path()))
    branching = next(n for n in model.graph.node if n.op_type == "If")
    branch = next(a.g for a in branching.attribute if a.name == "else_branch")
    change(branch)
    path = tmp_path / "silero_changed.onnx"
    onnx.save(model, str(path))
    return path


def _stft_stride_32(branch: onnx.GraphProto) -> None:
    conv = next(n for n in branch.node if n.op_type == "Conv")
    strides = next(a for a in conv.attribute if a.name == "strides")
    strides.ints[:] = [32]


def _pad_16(branch: onnx.GraphProto) -> None:
    node = next(n for n in branch.node if n.output[0].endswith("/stft/padding/Constant_1_output_0"))
    node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array([0, 16], np.int64)))


def _basis_cut(branch: onnx.GraphProto) -> None:
    node = next(n for n in branch.node if n.output[0].endswith("stft.forward_basis_buffer"))
    basis = numpy_helper.to_array(node.attribute[0].t)
    node.attribute[0].t.CopyFrom(numpy_helper.from_array(basis[:, :, :64].copy()))


@pytest.mark.parametrize("change", [_stft_stride_32, _pad_16, _basis_cut])
def test_a_different_layout_is_a_config_error(
    tmp_path: Path, change: Callable[[onnx.GraphProto], None]
) -> None:
    with pytest.raises(ConfigError, match="silero"):
        load_session(_shipped_copy(tmp_path, change))


def test_a_file_that_is_not_a_model_is_a_config_error(tmp_path: Path) -> None:
    garbage = tmp_path / "silero_vad.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="silero"):
        load_session(garbage)
    with pytest.raises(ConfigError, match="silero"):
        load_session(tmp_path / "missing.onnx")
