"""What one Silero ``Session.run`` costs per window: the file as shipped against the flat
8 kHz graph the model runs (``providers/vad/silero_graph.py``), batch by batch.

    .venv/bin/python bench/vad_runs.py [--int8]
    .venv/bin/python bench/vad_runs.py --cold

First the two are compared on ≈20 s of phone-line speech, pauses, hiss and loud noise,
window after window with each one's state carried, 4 rows at once: max |Δp|, max
|Δstate| (relative to the state's scale: the LSTM cell grows to ~30 in speech) and how
many speech/silence decisions at 0.5 differ. Then µs of CPU per run and per window at
each batch size, best of several interleaved passes (the machine is shared), and the
ratio shipped / flat.

``--int8`` adds the flat graph with its encoder matrices quantized by onnxruntime's
``quantize_dynamic`` (int8 weights per channel, activations quantized per run): the
lossy variant that was measured and not shipped (its decisions differ, and its
activation scale is shared by every row of a batch, so one call's audio would change
another's score).

``--cold`` measures instead why a run costs more in the server than here: µs of CPU per
run with the caches as a back-to-back loop leaves them, and after sweeping 2 MiB (L2),
one float per 4 KiB page of 48 MiB (the TLB, hardly any cache lines) or all of 48 MiB
(L3) between runs, for a graph of one ``Relu`` (onnxruntime's own run path), the flat
model at 1, 25 and 64 windows, and at 25 windows with IOBinding (inputs and outputs bound
once, per batch size) and with the session options one might suspect (no memory
pattern, no arena, denormals as zero).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from callbridge.audio import ulaw
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.vad.silero_graph import flat_model
from callbridge.providers.vad.silero_model import (
    default_model_path,
    load_session,
    load_shipped_session,
    model_feeds,
)

BATCHES = (1, 8, 32, 100, 200)
PASSES = 7
ROW, HOP = 288, 256
Run = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _runner(session: ort.InferenceSession) -> Run:
    feeds = model_feeds(session)
    names = ["output", "stateN"]

    def run(windows: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, state = session.run(names, {**feeds, "input": windows, "state": states})
        return out, state

    return run


def _phone(text: str) -> np.ndarray:
    pcm = ulaw.decode(ulaw.encode(synthesize_pcm(text)))
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768


def _corpus() -> np.ndarray:
    rng = np.random.default_rng(13)
    speech = [
        _phone("Hello, I would like to check my billing statement, and then talk to support."),
        _phone("No, stop. Wait a second, that is not what I asked for."),
        _phone("My account number is four seven one, two nine, eight eight."),
    ]
    noise = rng.standard_normal(16000).astype(np.float32)
    parts = [
        speech[0],
        np.zeros(8000, np.float32),
        noise * 10 ** (-50 / 20),
        speech[1] + rng.standard_normal(len(speech[1])).astype(np.float32) * 0.02,
        noise * 0.1,
        speech[2] * 0.2,
        speech[0],
    ]
    return np.concatenate(parts).astype(np.float32)


def _accuracy(reference: Run, candidate: Run, audio: np.ndarray) -> tuple[float, float, int, int]:
    rows = np.stack([np.roll(audio, -3001 * i) for i in range(4)])
    state_a = np.zeros((2, len(rows), 128), np.float32)
    state_b = state_a.copy()
    worst_p = worst_state = 0.0
    flips = windows = 0
    for k in range((rows.shape[1] - ROW) // HOP + 1):
        window = np.ascontiguousarray(rows[:, k * HOP : k * HOP + ROW])
        p_a, state_a = reference(window, state_a)
        p_b, state_b = candidate(window, state_b)
        worst_p = max(worst_p, float(np.abs(p_a - p_b).max()))
        scale = 1.0 + float(np.abs(state_a).max())
        worst_state = max(worst_state, float(np.abs(state_a - state_b).max()) / scale)
        flips += int(np.count_nonzero((p_a > 0.5) != (p_b > 0.5)))
        windows += len(rows)
    return worst_p, worst_state, flips, windows


def _int8_session() -> ort.InferenceSession:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = flat_model(default_model_path())
    nodes = []
    for i, node in enumerate(model.graph.node):  # Gemm → MatMul + Add: what it quantizes
        if node.op_type == "Gemm" and node.output[0].startswith("enc"):
            product = node.output[0] + "_product"
            nodes.append(helper.make_node("MatMul", node.input[:2], [product], name=f"q{i}"))
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]]))
        else:
            node.name = node.name or f"n{i}"
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    stft = [n.name for n in model.graph.node if n.op_type == "MatMul" and "frames" in n.input]
    with tempfile.TemporaryDirectory() as tmp:
        source, quantized = Path(tmp) / "flat.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(source))
        quantize_dynamic(
            source,
            quantized,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=stft,  # the STFT's input is raw audio: keep it exact
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(str(quantized), options, providers=["CPUExecutionProvider"])


def _windows(audio: np.ndarray, batch: int, count: int) -> list[np.ndarray]:
    starts = (len(audio) - ROW) // HOP
    return [
        np.stack([audio[((k + 7 * i) % starts) * HOP :][:ROW] for i in range(batch)])
        for k in range(count)
    ]


def _options(**config: str) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    for key, value in config.items():
        if key in ("enable_mem_pattern", "enable_cpu_mem_arena"):
            setattr(options, key, value == "1")
        else:
            options.add_session_config_entry(key, value)
    return options


def _relu_graph() -> bytes:
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])],
        "relu",
        [value("input", onnx.TensorProto.FLOAT, ["batch", ROW])],
        [value("output", onnx.TensorProto.FLOAT, ["batch", ROW])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _bound(session: ort.InferenceSession, windows: np.ndarray) -> Callable[[], object]:
    """A run with its input and outputs bound once (no dict, no output allocation)."""
    batch = len(windows)
    states = np.zeros((2, batch, 128), np.float32)
    binding = session.io_binding()
    binding.bind_cpu_input("input", windows)
    binding.bind_cpu_input("state", states)
    outputs = (np.zeros((batch, 1), np.float32), np.zeros((2, batch, 128), np.float32))
    for name, out in zip(("output", "stateN"), outputs, strict=True):
        binding.bind_output(name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
    options = ort.RunOptions()
    return lambda: (session.run_with_iobinding(binding, options), outputs)


def cold(passes: int = 9, runs: int = 20) -> None:
    """µs of CPU per ``Session.run``, by what was swept from the caches before it."""
    model = flat_model(default_model_path()).SerializeToString()

    def session(source: bytes, **config: str) -> ort.InferenceSession:
        return ort.InferenceSession(source, _options(**config), providers=["CPUExecutionProvider"])

    flat = session(model)
    relu = session(_relu_graph())
    audio = _corpus()

    def plain(s: ort.InferenceSession, batch: int) -> Callable[[], object]:
        feeds = {
            "input": _windows(audio, batch, 1)[0],
            "state": np.zeros((2, batch, 128), np.float32),
        }
        if s is relu:
            feeds = {"input": feeds["input"]}
        return lambda: s.run(None, feeds)

    cases = {
        "one Relu, 25 rows": plain(relu, 25),
        "flat, 1 window": plain(flat, 1),
        "flat, 25 windows": plain(flat, 25),
        "flat, 64 windows": plain(flat, 64),
        "  IOBinding": _bound(flat, _windows(audio, 25, 1)[0]),
        "  no memory pattern": plain(session(model, enable_mem_pattern="0"), 25),
        "  no arena": plain(session(model, enable_cpu_mem_arena="0"), 25),
        "  denormals as zero": plain(session(model, **{"session.set_denormal_as_zero": "1"}), 25),
    }
    big = np.ones((48 << 20) // 8)
    l2 = np.ones((2 << 20) // 8)
    pages = big[::512]  # one float64 per 4 KiB page
    sweeps: dict[str, Callable[[], object]] = {
        "back to back": lambda: None,
        "2 MiB": l2.sum,
        "48 MiB pages": pages.sum,
        "48 MiB": big.sum,
    }
    spent: dict[tuple[str, str], list[float]] = {(c, w): [] for c in cases for w in sweeps}
    for _ in range(passes):
        for case, run in cases.items():
            run()
            for sweep_name, sweep in sweeps.items():
                total = 0
                for _ in range(runs):
                    sweep()
                    start = time.process_time_ns()
                    run()
                    total += time.process_time_ns() - start
                spent[case, sweep_name].append(total / runs / 1000)
    print(f"µs of CPU per run by what was swept before it, median of {passes} interleaved passes")
    print(f"{'':<22}" + "".join(f"{name:>15}" for name in sweeps))
    for case in cases:
        cells = "".join(f"{np.median(spent[case, name]):>15.0f}" for name in sweeps)
        print(f"{case:<22}{cells}")
    print("(indented rows: flat, 25 windows, one thing changed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--int8", action="store_true", help="also the quantized variant")
    parser.add_argument("--cold", action="store_true", help="per run, by what the caches lost")
    args = parser.parse_args()
    if args.cold:
        cold()
        return
    runs = {"shipped": _runner(load_shipped_session()), "flat": _runner(load_session())}
    if args.int8:
        runs["int8"] = _runner(_int8_session())
    audio = _corpus()
    for name, run in list(runs.items())[1:]:
        p, state, flips, windows = _accuracy(runs["shipped"], run, audio)
        print(
            f"{name} vs shipped over {windows} windows: max |Δp| {p:.2e}, "
            f"max |Δstate| {state:.2e} of the state's scale, {flips} decisions at 0.5 differ"
        )
    print(f"\nµs of CPU per run (per window), best of {PASSES} interleaved passes")
    header = "".join(f"{name:>20}" for name in runs)
    ratios = "".join(f"{'shipped/' + name:>16}" for name in list(runs)[1:])
    print(f"{'batch':>6}{header}{ratios}")
    for batch in BATCHES:
        windows = _windows(audio, batch, max(10, 2000 // batch))
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(PASSES):
            for name, run in runs.items():
                states = np.zeros((2, batch, 128), np.float32)
                start = time.process_time_ns()
                for w in windows:
                    _, states = run(w, states)
                spent = (time.process_time_ns() - start) / 1000 / len(windows)
                best[name] = min(best[name], spent)
        cells = "".join(f"{v:>11.0f} ({v / batch:5.1f})" for v in best.values())
        speedups = "".join(f"{best['shipped'] / best[n]:>15.2f}×" for n in list(runs)[1:])
        print(f"{batch:>6}{cells}{speedups}")


if __name__ == "__main__":
    main()
