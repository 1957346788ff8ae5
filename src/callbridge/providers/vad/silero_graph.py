"""Silero v5's 8 kHz branch rebuilt as one flat ONNX graph of dense matrix products.

The shipped file (torch.jit export) is ``If(sr == 16000)`` over two 113-node subgraphs,
with more ``If``s nested around the LSTM, and runs its 1-D convolutions one image at a
time: ≈35 µs a window even in batches of 200, a quarter of the FMA peak. The same
arithmetic, laid out for batched GEMMs, costs about a third of that (bench/vad_runs.py):

- STFT: the right-reflect-padded row (320 samples) is cut into 5 hops of 64; the 4
  frames (hop pairs) times the transposed basis (128×130) in one ``MatMul``; the
  magnitude ``sqrt(re² + im²)`` per bin, time-major (B, 4·65).
- Encoder: each Conv1d(k3, pad 1) over its 4, 2, 1, 1 frames is a fixed linear map, so
  it becomes a dense matrix (zeros where a tap falls in the padding), one ``Gemm`` +
  ``Relu`` per half of its output frames, the batch in the GEMM's rows.
- Decoder: the same ``LSTM`` op (gates reordered from torch's i,f,g,o to ONNX's i,o,f,c),
  ``Relu``, a 128→1 ``Gemm``, ``Sigmoid``; the mean over one time step is the value.

Only the order of the sums changes: probabilities agree with the shipped model to a few
1e-6, states to ≈1e-5 relative (tests/providers_local/test_local_vad_graph.py). The
weights are read from the shipped file at load time (nothing is copied into this
repository), and the shipped graph's strides, paddings and shapes are checked against
what this layout assumes, so a different model file fails loudly instead of scoring
wrong.

Measured and not kept: int8 (onnxruntime's dynamic quantization of the encoder, or of
everything) is ≈20 % faster but moves probabilities by up to 0.5 and flips speech/silence
decisions, and its activation scale is shared by every row of a batch, so one call's
audio would change another's score (``bench/vad_runs.py --int8``); a hand-written LSTM
cell, ReduceSumSquare for the magnitude, one GEMM per output frame and flushing
denormals were no faster than what is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from callbridge.errors import ConfigError

__all__ = ["flat_model", "shipped_weights"]

_PREFIX = "If_0_else_branch__Inline_0__"  # the 8 kHz branch's names in the shipped file
_HOP = 64
_FRAMES = 4  # (288 + 32 - 128) / 64 + 1
_BINS = 65
_HIDDEN = 128
_ENCODER_STRIDES = (1, 2, 2, 1)
_OPSET = 17

Array = NDArray[np.float32]

_SHAPES = {
    "stft.forward_basis_buffer": (2 * _BINS, 1, 2 * _HOP),
    "encoder.0.reparam_conv.weight": (128, _BINS, 3),
    "encoder.0.reparam_conv.bias": (128,),
    "encoder.1.reparam_conv.weight": (64, 128, 3),
    "encoder.1.reparam_conv.bias": (64,),
    "encoder.2.reparam_conv.weight": (64, 64, 3),
    "encoder.2.reparam_conv.bias": (64,),
    "encoder.3.reparam_conv.weight": (128, 64, 3),
    "encoder.3.reparam_conv.bias": (128,),
    "decoder.rnn.weight_ih": (4 * _HIDDEN, _HIDDEN),
    "decoder.rnn.weight_hh": (4 * _HIDDEN, _HIDDEN),
    "decoder.rnn.bias_ih": (4 * _HIDDEN,),
    "decoder.rnn.bias_hh": (4 * _HIDDEN,),
    "decoder.decoder.2.weight": (1, _HIDDEN, 1),
    "decoder.decoder.2.bias": (1,),
}


def shipped_weights(path: Path) -> dict[str, Array]:
    """The 8 kHz branch's weights, by their torch names, after checking the graph around
    them is the one this module rebuilds (pad 32 reflect, STFT stride 64, conv strides)."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf and file errors share no narrower base
        raise ConfigError(f"silero: cannot read model {path}: {exc}") from exc
    branch = _eight_khz_branch(model, path)
    weights: dict[str, Array] = {}
    convs: list[dict[str, Any]] = []
    pad_modes: list[bytes] = []
    for node in branch.node:
        if node.op_type == "Constant" and node.output[0].startswith(_PREFIX):
            name = node.output[0][len(_PREFIX) :]
            if name in _SHAPES:
                weights[name] = numpy_helper.to_array(node.attribute[0].t).astype(np.float32)
        elif node.op_type == "Conv":
            convs.append({a.name: helper.get_attribute_value(a) for a in node.attribute})
        elif node.op_type == "Pad":
            pad_modes += [a.s for a in node.attribute if a.name == "mode"]
    for name, shape in _SHAPES.items():
        if name not in weights or weights[name].shape != shape:
            got = weights[name].shape if name in weights else "missing"
            raise ConfigError(f"silero: {path}: {name} is {got}, expected {shape}")
    expected = [([2 * _HOP], [_HOP], [0, 0])] + [([3], [s], [1, 1]) for s in _ENCODER_STRIDES]
    expected.append(([1], [1], [0, 0]))
    found = [(c.get("kernel_shape"), c.get("strides"), c.get("pads")) for c in convs]
    if found != expected or pad_modes != [b"reflect"] or not _pads_right(branch, 32):
        raise ConfigError(f"silero: {path}: the 8 kHz graph is not the Silero v5 layout")
    return weights


def _eight_khz_branch(model: onnx.ModelProto, path: Path) -> onnx.GraphProto:
    for node in model.graph.node:
        if node.op_type == "If":
            for attribute in node.attribute:
                if attribute.name == "else_branch":  # sr != 16000
                    branch: onnx.GraphProto = attribute.g
                    return branch
    raise ConfigError(f"silero: {path}: no 8 kHz branch (is this Silero v5?)")


def _pads_right(branch: onnx.GraphProto, samples: int) -> bool:
    """The STFT's padding constant: (0, ``samples``) on the time axis (torch's order)."""
    for node in branch.node:
        name = node.output[0] if node.op_type == "Constant" else ""
        if name.endswith("/stft/padding/Constant_1_output_0"):
            return bool(numpy_helper.to_array(node.attribute[0].t).tolist() == [0, samples])
    return False


def flat_model(path: Path) -> onnx.ModelProto:
    """The shipped model's 8 kHz path as a flat graph: ``input`` (B, 288), ``state``
    (2, B, 128) → ``output`` (B, 1), ``stateN`` (2, B, 128); no ``sr`` input."""
    w = shipped_weights(path)
    graph = _Graph()
    graph.const("pads", np.array([0, 0, 0, 32], np.int64))
    graph.node("Pad", ["input", "pads"], ["padded"], mode="reflect")
    spectrum = _stft(graph, w["stft.forward_basis_buffer"][:, 0, :])
    features, frames = spectrum, _FRAMES
    for i, stride in enumerate(_ENCODER_STRIDES):
        layer = f"encoder.{i}.reparam_conv"
        features, frames = _encoder_layer(
            graph, f"enc{i}", features, w[f"{layer}.weight"], w[f"{layer}.bias"], frames, stride
        )
    _decoder(graph, w, features)
    onnx_graph = helper.make_graph(
        graph.nodes,
        "silero_vad_8k_flat",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 288]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", _HIDDEN]),
        ],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", _HIDDEN]),
        ],
        graph.initializers,
    )
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8  # onnxruntime ≥ 1.17 reads it
    onnx.checker.check_model(model, full_check=True)
    return model


def _stft(graph: _Graph, basis: Array) -> str:
    """Frames of 128 at hop 64 over the padded 320 samples, then |X| per bin: (B, 260)."""
    graph.const("hops_shape", np.array([0, _FRAMES + 1, _HOP], np.int64))
    graph.const("zero", np.array([0], np.int64))
    graph.const("one", np.array([1], np.int64))
    graph.const("last", np.array([_FRAMES], np.int64))
    graph.const("end", np.array([_FRAMES + 1], np.int64))
    graph.const("basis_t", basis.T)  # (128, 130): real bins then imaginary
    graph.const("halves", np.array([_BINS, _BINS], np.int64))
    graph.const("flat_shape", np.array([0, _FRAMES * _BINS], np.int64))
    graph.node("Reshape", ["padded", "hops_shape"], ["hops"])  # (B, 5, 64)
    graph.node("Slice", ["hops", "zero", "last", "one"], ["first_halves"])
    graph.node("Slice", ["hops", "one", "end", "one"], ["second_halves"])
    graph.node("Concat", ["first_halves", "second_halves"], ["frames"], axis=2)  # (B, 4, 128)
    graph.node("MatMul", ["frames", "basis_t"], ["spectrum"])  # (B, 4, 130)
    graph.node("Split", ["spectrum", "halves"], ["real", "imag"], axis=2)
    graph.node("Mul", ["real", "real"], ["real_sq"])
    graph.node("Mul", ["imag", "imag"], ["imag_sq"])
    graph.node("Add", ["real_sq", "imag_sq"], ["power"])
    graph.node("Sqrt", ["power"], ["magnitude"])  # (B, 4, 65)
    graph.node("Reshape", ["magnitude", "flat_shape"], ["magnitude_flat"])
    return "magnitude_flat"


def _encoder_layer(
    graph: _Graph, name: str, features: str, weight: Array, bias: Array, frames: int, stride: int
) -> tuple[str, int]:
    """Conv1d(kernel 3, padding 1) + ReLU over ``frames`` time-major frames.

    The convolution over so few frames is one fixed (T·C_in, T'·C_out) matrix, with
    zeros where a tap falls in the padding. With four or two output frames, each half of
    them reads only the input frames its taps reach, so the layer is one ``Gemm`` per half
    on a slice of the input (a third fewer multiplications in the first two layers, ≈8 %
    of the run in batches of 32+); the halves are joined back in time order.
    """
    out_channels, in_channels, kernel = weight.shape
    frames_out = (frames + 2 - kernel) // stride + 1
    matrix = np.zeros((frames * in_channels, frames_out * out_channels), np.float32)
    for t_out in range(frames_out):
        for tap in range(kernel):
            t_in = t_out * stride + tap - 1
            if 0 <= t_in < frames:
                rows = slice(t_in * in_channels, (t_in + 1) * in_channels)
                cols = slice(t_out * out_channels, (t_out + 1) * out_channels)
                matrix[rows, cols] = weight[:, :, tap].T
    biases = np.tile(bias, frames_out).astype(np.float32)
    half = frames_out // 2
    groups = [range(0, half), range(half, frames_out)] if half else [range(frames_out)]
    outputs = []
    for g, group in enumerate(groups):
        cols = slice(group[0] * out_channels, (group[-1] + 1) * out_channels)
        first = max(0, group[0] * stride - 1)  # the input frames the group's taps reach
        last = min(frames - 1, group[-1] * stride + kernel - 2)
        rows = slice(first * in_channels, (last + 1) * in_channels)
        part = f"{name}_{g}"
        source = features
        if (rows.start, rows.stop) != (0, len(matrix)):
            graph.const(f"{part}_from", np.array([rows.start], np.int64))
            graph.const(f"{part}_to", np.array([rows.stop], np.int64))
            graph.node("Slice", [features, f"{part}_from", f"{part}_to", "one"], [f"{part}_in"])
            source = f"{part}_in"
        graph.const(f"{part}_w", matrix[rows, cols])
        graph.const(f"{part}_b", biases[cols])
        graph.node("Gemm", [source, f"{part}_w", f"{part}_b"], [part])
        graph.node("Relu", [part], [f"{part}_relu"])
        outputs.append(f"{part}_relu")
    if len(outputs) == 1:
        return outputs[0], frames_out
    graph.node("Concat", outputs, [name], axis=1)
    return name, frames_out


def _decoder(graph: _Graph, w: dict[str, Array], features: str) -> None:
    """One LSTM step from (h, c) = state, then relu → 128→1 → sigmoid on the new h."""

    def onnx_gates(a: Array) -> Array:  # torch i,f,g,o → ONNX i,o,f,c
        h = _HIDDEN
        return np.concatenate([a[0:h], a[3 * h : 4 * h], a[h : 3 * h]], axis=0)

    graph.const("lstm_w", onnx_gates(w["decoder.rnn.weight_ih"])[np.newaxis])
    graph.const("lstm_r", onnx_gates(w["decoder.rnn.weight_hh"])[np.newaxis])
    graph.const(
        "lstm_b",
        np.concatenate(
            [onnx_gates(w["decoder.rnn.bias_ih"]), onnx_gates(w["decoder.rnn.bias_hh"])]
        )[np.newaxis],
    )
    graph.const("state_halves", np.array([1, 1], np.int64))
    graph.const("out_w", w["decoder.decoder.2.weight"][0])  # (128, 1)
    graph.const("out_b", w["decoder.decoder.2.bias"])
    graph.node("Unsqueeze", [features, "zero"], ["lstm_x"])  # one time step
    graph.node("Split", ["state", "state_halves"], ["h0", "c0"], axis=0)
    lstm_inputs = ["lstm_x", "lstm_w", "lstm_r", "lstm_b", "", "h0", "c0"]
    graph.node("LSTM", lstm_inputs, ["", "h1", "c1"], hidden_size=_HIDDEN)
    graph.node("Concat", ["h1", "c1"], ["stateN"], axis=0)
    graph.node("Squeeze", ["h1", "zero"], ["h"])
    graph.node("Relu", ["h"], ["h_relu"])
    graph.node("Gemm", ["h_relu", "out_w", "out_b"], ["logit"])
    graph.node("Sigmoid", ["logit"], ["output"])


class _Graph:
    """Nodes and initializers collected in order."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: NDArray[Any]) -> None:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))

    def node(self, op: str, inputs: list[str], outputs: list[str], **attributes: Any) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, **attributes))
