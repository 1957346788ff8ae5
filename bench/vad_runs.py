"""What one Silero ``Session.run`` costs against its batch size, called three ways.

    .venv/bin/python bench/vad_runs.py

The metronome runs one batch per tick (``providers/vad/silero_batch.py``). This splits
a run's CPU into its fixed part (the cost at batch 1: onnxruntime's per-run work) and
the part per window, and checks whether a leaner call saves the fixed part:

- ``run``: ``InferenceSession.run`` with numpy feeds (what the model uses);
- ``ort_values``: ``run_with_ort_values``, feeds wrapped as ``OrtValue``, ``sr`` made once;
- ``iobinding``: ``run_with_iobinding``, inputs bound to the numpy buffers and outputs
  to preallocated ones (no output allocation), ``sr`` bound once as an ``OrtValue``.

All three give the same numbers (checked first). Each figure is the best of several
interleaved passes over real speech windows, CPU time (the machine is shared).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort

from callbridge.audio import ulaw
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.vad.silero_model import load_session

BATCHES = (1, 2, 8, 32, 64, 100, 128, 200)
PASSES = 5
Run = Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]


def _callers(session: ort.InferenceSession) -> dict[str, Run]:
    sr = np.array(8000, dtype=np.int64)
    sr_value = ort.OrtValue.ortvalue_from_numpy(sr)
    names = ["output", "stateN"]
    outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    binding = session.io_binding()
    binding.bind_ortvalue_input("sr", sr_value)

    def run(windows: np.ndarray, states: np.ndarray) -> tuple[Any, Any]:
        out, state = session.run(names, {"input": windows, "state": states, "sr": sr})
        return out, state

    def ort_values(windows: np.ndarray, states: np.ndarray) -> tuple[Any, Any]:
        feeds = {
            "input": ort.OrtValue.ortvalue_from_numpy(windows),
            "state": ort.OrtValue.ortvalue_from_numpy(states),
            "sr": sr_value,
        }
        out, state = session.run_with_ort_values(names, feeds)
        return out.numpy(), state.numpy()

    def iobinding(windows: np.ndarray, states: np.ndarray) -> tuple[Any, Any]:
        rows = len(windows)
        out, state = outputs.get(rows) or outputs.setdefault(
            rows,
            (np.empty((rows, 1), np.float32), np.empty((2, rows, 128), np.float32)),
        )
        binding.bind_cpu_input("input", windows)
        binding.bind_cpu_input("state", states)
        binding.bind_output("output", "cpu", 0, np.float32, out.shape, out.ctypes.data)
        binding.bind_output("stateN", "cpu", 0, np.float32, state.shape, state.ctypes.data)
        session.run_with_iobinding(binding)
        return out, state

    return {"run": run, "ort_values": ort_values, "iobinding": iobinding}


def _windows(batch: int, count: int) -> list[np.ndarray]:
    text = "Hello, I would like to check my billing statement, and then talk to support."
    pcm = np.frombuffer(ulaw.decode(ulaw.encode(synthesize_pcm(text))), "<i2")
    samples = pcm.astype(np.float32) / 32768
    starts = (len(samples) - 288) // 256
    return [
        np.stack([samples[((k + 7 * i) % starts) * 256 :][:288] for i in range(batch)])
        for k in range(count)
    ]


def _same_numbers(callers: dict[str, Run]) -> None:
    states = np.zeros((2, 8, 128), np.float32)
    for windows in _windows(8, 20):
        results = {name: call(windows, states) for name, call in callers.items()}
        reference = results["run"]
        for name, (out, state) in results.items():
            np.testing.assert_allclose(out, reference[0], atol=1e-6, err_msg=name)
            np.testing.assert_allclose(state, reference[1], atol=1e-6, err_msg=name)
        states = np.array(reference[1])


def main() -> None:
    callers = _callers(load_session())
    _same_numbers(callers)
    print("µs of CPU per Session.run (and per window), best of", PASSES, "passes")
    print(f"{'batch':>6}" + "".join(f"{name:>22}" for name in callers))
    for batch in BATCHES:
        windows = _windows(batch, max(10, 2000 // batch))
        best = dict.fromkeys(callers, float("inf"))
        for _ in range(PASSES):
            for name, call in callers.items():
                states = np.zeros((2, batch, 128), np.float32)
                start = time.process_time_ns()
                for w in windows:
                    _, states = call(w, states)
                    states = np.array(states)  # as the model's caller keeps them
                spent = (time.process_time_ns() - start) / 1000 / len(windows)
                best[name] = min(best[name], spent)
        print(f"{batch:>6}" + "".join(f"{v:>12.0f} ({v / batch:5.1f})" for v in best.values()))


if __name__ == "__main__":
    main()
