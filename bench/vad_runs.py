"""What one Silero ``Session.run`` costs per window: the file as shipped against the flat
8 kHz graph the model runs (``providers/vad/silero_graph.py``), batch by batch.

    .venv/bin/python bench/vad_runs.py [--int8]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--int8", action="store_true", help="also the quantized variant")
    args = parser.parse_args()
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
