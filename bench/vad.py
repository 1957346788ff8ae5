"""VAD cost per call: µs of CPU per 20 ms frame, and memory per added call.

    .venv/bin/python bench/vad.py [--seconds 2] [--shipped]
    .venv/bin/python bench/vad.py --server 80 --seconds 5 [--lag-ms 6] [--cold-mb 48] [--beat-ms 10]

For each detector it feeds every call one 20 ms frame per tick (as the engine does) and
reports µs per frame per call, plus what 200 calls would take of one core (50 frames/s
each). Silero runs unbatched (one model run per window per call) and batched (one run
per tick for all calls, ``SileroModel.process_batch``) and on the tick (what the engine's
metronome runs: ``BatchedSileroModel.score_frames`` on a tick's decoded frames, every
call's state in one array; the line under each says how much of it is ``Session.run``).
Memory is the RSS growth of opening 100 more streams that have each processed audio.
Silero runs the flat 8 kHz graph (``silero_graph.py``); ``--shipped`` runs the model
file as shipped instead, for comparison.

``--server N`` measures instead what the server's metronome pays (``vad_server.py``):
N calls whose frames arrive at random phases of their 20 ms, a 10 ms beat that is late
by a random lag (so some beats see two frames of a call, as a busy loop does), and, with
``--cold-mb``, that much memory swept between two beats (the server's other work: it
evicts the model's weights and onnxruntime's own data from the caches, which a
benchmark running the model back to back never does). It prints runs, windows, the
batch sizes and µs of CPU per window and per run, warm and cold. Run it against another
tree with ``PYTHONPATH=<tree>/src`` (it uses only ``score_frames`` and the counters).
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import vad_server  # bench/vad_server.py (bench/ is on the path)

from callbridge.audio import ulaw
from callbridge.providers.base import VadStream
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.vad.silero_batch import BatchedSileroModel
from callbridge.providers.vad.silero_model import SileroModel, load_session, load_shipped_session
from callbridge.providers.vad.webrtc import WebrtcModel

FRAME_BYTES = 320
FRAMES_PER_S = 50
TARGET_CALLS = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per call per case")
    parser.add_argument("--shipped", action="store_true", help="the model file as shipped")
    parser.add_argument("--server", type=int, metavar="N", help="N calls, the server's pattern")
    parser.add_argument("--lag-ms", type=float, default=6.0, help="mean lateness of a beat")
    parser.add_argument("--cold-mb", type=float, default=48.0, help="memory swept between beats")
    parser.add_argument("--passes", type=int, default=3, help="warm/cold passes, interleaved")
    parser.add_argument("--beat-ms", type=float, default=10.0, help="the metronome's period")
    args = parser.parse_args()
    if args.server:
        vad_server.report(
            args.server, args.seconds, args.lag_ms, args.cold_mb, args.passes, args.beat_ms
        )
        return
    frames = _speech_frames()
    n_frames = int(args.seconds * FRAMES_PER_S)
    session = load_shipped_session() if args.shipped else load_session()
    silero, webrtc = SileroModel(session=session), WebrtcModel(2)

    print(f"µs of CPU per 20 ms frame per call ({args.seconds:g} s of speech per call)")
    print(f"{'case':<28}{'µs/frame':>10}{'core @200 calls':>17}")
    for calls in (1, 10, 50, 200):
        _row(f"silero unbatched, {calls} calls", _unbatched(silero, calls, frames, n_frames))
    for calls in (1, 10, 50, 200):
        _row(f"silero batched x{calls}", _batched(silero, calls, frames, n_frames))
    ticked = BatchedSileroModel(session=session)
    for calls in (10, 50, 100, 200):
        total, model = _on_the_tick(ticked, calls, frames, n_frames)
        _row(f"silero on the tick x{calls}", total)
        print(f"{'':<28}{model:>10.1f}  of it in Session.run")
    for calls in (1, 200):
        _row(f"webrtc, {calls} calls", _unbatched(webrtc, calls, frames, n_frames))

    print("\nscore_frames without the model (a stand-in run): its own bookkeeping, best of 5")
    for calls in (50, 100, 200):
        print(f"{f'{calls} calls':<28}{_bookkeeping(calls, frames, n_frames):>10.2f} µs/frame")
    print("\nRSS growth per 100 more streams (each has processed 1 s of audio)")
    for name, new_stream in (
        ("silero", silero.new_stream),
        ("silero on the tick", ticked.new_stream),
        ("webrtc", webrtc.new_stream),
    ):
        print(f"{name:<28}{_rss_per_100(new_stream, frames) / 1024:>9.1f} KiB")


def _row(label: str, us_per_frame: float) -> None:
    core = us_per_frame * FRAMES_PER_S * TARGET_CALLS / 1e6
    print(f"{label:<28}{us_per_frame:>10.1f}{core:>16.0%}")


def _unbatched(model: SileroModel | WebrtcModel, calls: int, frames: list[bytes], n: int) -> float:
    streams: list[VadStream] = [model.new_stream() for _ in range(calls)]
    for s in streams:  # warm-up: first runs allocate
        s.speech_probability(frames[0])
    start = time.process_time()
    for i in range(n):
        frame = frames[i % len(frames)]
        for s in streams:
            s.speech_probability(frame)
    return (time.process_time() - start) * 1e6 / (n * calls)


def _batched(model: SileroModel, calls: int, frames: list[bytes], n: int) -> float:
    streams = [model.new_stream() for _ in range(calls)]
    model.process_batch([(s, frames[0]) for s in streams])
    start = time.process_time()
    for i in range(n):
        frame = frames[i % len(frames)]
        model.process_batch([(s, frame) for s in streams])
    return (time.process_time() - start) * 1e6 / (n * calls)


def _on_the_tick(
    model: BatchedSileroModel, calls: int, frames: list[bytes], n: int
) -> tuple[float, float]:
    """µs per call-frame of ``score_frames``, and of it inside ``Session.run``."""
    streams = [model.new_stream() for _ in range(calls)]
    spec = [(stream, i, 1) for i, stream in enumerate(streams)]
    ticks = [
        np.frombuffer(b"".join(frames[(t + 7 * i) % len(frames)] for i in range(calls)), "<i2")
        for t in range(n)
    ]
    model.score_frames(ticks[0], spec)
    in_run = 0
    run = model.infer_batch

    def timed(windows: Any, states: Any) -> Any:
        nonlocal in_run
        t0 = time.process_time_ns()
        try:
            return run(windows, states)
        finally:
            in_run += time.process_time_ns() - t0

    model.infer_batch = timed  # type: ignore[method-assign]
    start = time.process_time_ns()
    for pcm in ticks:
        model.score_frames(pcm, spec)
    total = time.process_time_ns() - start
    del model.infer_batch
    return total / 1000 / (n * calls), in_run / 1000 / (n * calls)


def _bookkeeping(calls: int, frames: list[bytes], n: int) -> float:
    """``score_frames`` per call-frame with ``Session.run`` replaced by a stand-in (the
    same shapes out): what the batching itself costs, steady under a loaded machine."""
    model = BatchedSileroModel()

    def stand_in(windows: Any, states: Any) -> Any:
        return np.full(len(windows), 0.5, np.float32), states + np.float32(0.001)

    model.infer_batch = stand_in  # type: ignore[method-assign]
    spec = [(model.new_stream(), i, 1) for i in range(calls)]
    ticks = [
        np.frombuffer(b"".join(frames[(t + 7 * i) % len(frames)] for i in range(calls)), "<i2")
        for t in range(n)
    ]
    best = float("inf")
    for _ in range(5):
        start = time.process_time_ns()
        for pcm in ticks:
            model.score_frames(pcm, spec)
        best = min(best, (time.process_time_ns() - start) / 1000 / (n * calls))
    return best


def _rss_per_100(new_stream: Callable[[], VadStream], frames: list[bytes]) -> int:
    keep: list[VadStream] = []

    def add(count: int) -> None:
        for _ in range(count):
            s = new_stream()
            for frame in frames[:FRAMES_PER_S]:
                s.speech_probability(frame)
            keep.append(s)

    add(100)  # warm-up: allocator pools and ORT arenas settle
    gc.collect()
    before = _rss_bytes()
    add(1000)
    gc.collect()
    return (_rss_bytes() - before) // 10


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize()


def _speech_frames() -> list[bytes]:
    text = "Hello, I would like to check my billing statement, and then talk to support."
    pcm = ulaw.decode(ulaw.encode(synthesize_pcm(text)))
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]


if __name__ == "__main__":
    main()
