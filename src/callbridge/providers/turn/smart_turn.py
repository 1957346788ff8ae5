"""Smart Turn v3.2: an end-of-turn model that hears prosody, not just words.

The model (BSD-2-Clause, Daily/Pipecat; a Whisper-tiny encoder with a classifier head,
8.7 MB) takes the last 8 s of the turn at 16 kHz as Whisper log-mel features and says
how likely the speaker has finished. ``scripts/fetch_smart_turn.py`` installs the file at
set-up (``make``); without it callbridge falls back to the lexical judge and says so.

One ONNX session per process. ``judge`` is called once per silence onset per call;
requests that arrive while a run is in flight are batched into the next run, which
happens in the judge's own worker thread. What a judgment costs is the model's
arithmetic (a Whisper-tiny encoder over 400 positions, ~3.6 G int8 multiply-adds,
whatever the turn's length: the window is fixed): 90-130 ms of a core on an AVX2-only
server core (the authors publish "as little as 10 ms on some CPUs, under 100 ms on most
cloud instances"); the features are ~5 % of it. So the thread runs at a lower
priority (``nice`` +10): where the server shares one core, the event loop and the VAD
thread, i.e. every call's 20 ms frames, always go first, and a judgment waits for their
idle time (a verdict that comes late only keeps the full endpoint). ``bench/smart_turn.py``
measures both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import soxr

from callbridge.audio.log_mel import RATE_HZ, log_mel

__all__ = ["MODEL_FILE", "SmartTurn", "default_model_path", "load_smart_turn"]

log = logging.getLogger(__name__)

MODEL_FILE: Final = "smart-turn-v3.2-cpu.onnx"
WINDOW_S: Final = 8
_LINE_RATE_HZ: Final = 8000
_MAX_BATCH: Final = 2  # batching saves nothing measurable per judgment (bench: 97-131
# ms of a core at 1 to 8), so batches stay small: a crowd's first turns need not wait for
# its last ones
WORKER_NICE: Final = 10  # below the event loop's and the VAD thread's priority


def default_model_path() -> Path:
    """``CALLBRIDGE_SMART_TURN_MODEL``, else where the set-up installs it."""
    configured = os.environ.get("CALLBRIDGE_SMART_TURN_MODEL")
    if configured:
        return Path(configured)
    return Path(sys.prefix) / "share" / "callbridge" / MODEL_FILE


def load_smart_turn(path: Path | None = None, *, nice: int = WORKER_NICE) -> SmartTurn | None:
    """The shared model, or None (logged) when its file is not installed."""
    path = path or default_model_path()
    if not path.is_file():
        log.warning("end_of_turn.fallback judge=lexical reason=no_model_file path=%s "
                    "hint=run `python scripts/fetch_smart_turn.py` (make does)", path)
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    log.info("end_of_turn.loaded judge=smart-turn path=%s", path)
    return SmartTurn(session, nice=nice)


class SmartTurn:
    """A ``TurnJudge``."""

    name = "smart-turn"

    def __init__(self, session: ort.InferenceSession, *, nice: int = WORKER_NICE) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._pending: list[tuple[bytes, asyncio.Future[float]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="smart-turn", initializer=_lower_priority, initargs=(nice,)
        )
        self.runs = 0
        self.judged = 0
        self.cpu_s = 0.0  # CPU time of the judgments (the worker thread's, measured)

    async def judge(self, pcm16: bytes) -> float:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending.append((pcm16, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="smart-turn.batch")
        return await future

    def predict(self, turns: list[bytes]) -> list[float]:
        """Blocking: one model run for all ``turns`` (8 kHz PCM each)."""
        started = time.thread_time()
        features = np.stack([_features(pcm16) for pcm16 in turns])
        (logits,) = self._session.run(None, {self._input: features})
        self.cpu_s += time.thread_time() - started
        return [float(p) for p in np.asarray(logits).reshape(len(turns), -1)[:, 0]]

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self.predict, [pcm for pcm, _ in batch]
                )
            except Exception as exc:  # a judge that fails must not hang the turn
                log.error("end_of_turn.failed batch=%d", len(batch), exc_info=exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.runs += 1
            self.judged += len(batch)
            for (_, future), probability in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(probability)


def _lower_priority(nice: int) -> None:
    """The worker thread yields the core to the frame path (Linux: nice is per thread)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _features(pcm16: bytes) -> npt.NDArray[np.float32]:
    """8 kHz PCM → the model's input: 16 kHz, the last 8 s, zeros in front if shorter."""
    audio = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
    audio = soxr.resample(audio, _LINE_RATE_HZ, RATE_HZ, quality="HQ")
    size = WINDOW_S * RATE_HZ
    audio = audio[-size:]
    if len(audio) < size:
        audio = np.pad(audio, (size - len(audio), 0))
    return log_mel(audio)
