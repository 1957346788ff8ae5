"""The metronome's VAD as the server runs it: ``bench/vad.py --server N``.

A benchmark that runs the model back to back keeps its weights (≈1.2 MB) and
onnxruntime's own code and data in the caches; the server runs hundreds of µs of other
Python between two beats, which evicts them, and each ``Session.run`` then starts cold.
Measured on this machine (AMD EPYC, 512 KiB L2, 32 MiB L3 shared, no hardware counters in
the VM): sweeping 48 MiB between runs adds ≈0.4–0.6 ms to every run, a 2 MiB sweep (L2
only) or one touch per page of 48 MiB (TLB only) nothing; ≈0.2 ms of it is there even for
a one-``Relu`` graph (onnxruntime's run path), the rest is the weights and activations.
So the server pays per run far more than per window, and what counts is how many runs a
second of audio takes, at what batch sizes.

The arrival pattern: call i's frame k arrives at ``20k + φᵢ`` ms (φᵢ uniform in 20 ms);
the beat's grid is every 10 ms, each beat is late by an exponential lag (``--lag-ms``,
the loop's other work), takes every frame arrived by then, and a beat late past the next
grid point skips it, as ``Metronome._beat`` does. The default lag, 6 ms, gives ≈10 % of
beats a second round, as the 80-call profile's share of ``_run_rounds`` says;
``--beat-ms 20`` shows what a VAD cadence of one frame would save (it would add up to
10 ms to barge-in). So a late beat takes two frames of some
calls, and a call whose carry-over was ≥ 24 ms then has two windows: a second round.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from callbridge.audio import ulaw
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.vad.silero_batch import BatchedSileroModel

FRAME_MS = 20
FRAME_SAMPLES = 160
WINDOW_SAMPLES = 256
Beat = tuple[np.ndarray, list[tuple[int, int, int]]]  # pcm, (call, first, count)


def lead_frames(call: int) -> int:
    """Frames a call has had before the pattern starts: calls start at different times,
    so their windows end on different frames (5 of every 8 frames end one)."""
    return (call * 5) % 8


def _caller_frames() -> list[bytes]:
    """Speech then as long a near-silence (−60 dBFS hiss), as phone PCM16 frames."""
    text = "Hello, I would like to check my billing statement, and then talk to support."
    pcm = ulaw.decode(ulaw.encode(synthesize_pcm(text)))
    speech = [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]
    rng = np.random.default_rng(7)
    hiss = (rng.standard_normal(160 * len(speech)) * 32768 * 10 ** (-60 / 20)).astype("<i2")
    quiet = hiss.tobytes()
    return speech + [quiet[i : i + 320] for i in range(0, len(quiet), 320)]


def beats(
    calls: int, seconds: float, lag_ms: float, beat_ms: float = 10, seed: int = 13
) -> list[Beat]:
    """Every beat's joined frames and its ``score_frames`` spec, on the pattern above."""
    rng = np.random.default_rng(seed)
    frames = _caller_frames()
    phases = rng.uniform(0, FRAME_MS, calls)
    offsets = rng.integers(0, len(frames), calls)
    taken = np.zeros(calls, dtype=np.int64)
    out: list[Beat] = []
    grid = 0.0
    while grid < seconds * 1000:
        at = grid + (rng.exponential(lag_ms) if lag_ms > 0 else 0.0)
        arrived = np.maximum(np.floor((at - phases) / FRAME_MS).astype(np.int64) + 1, 0)
        chunks: list[bytes] = []
        spec: list[tuple[int, int, int]] = []
        first = 0
        for call in np.flatnonzero(arrived > taken):
            count = int(arrived[call] - taken[call])
            start = int(taken[call] + offsets[call])
            chunks += [frames[(start + j) % len(frames)] for j in range(count)]
            spec.append((int(call), first, count))
            first += count
        taken = np.maximum(taken, arrived)
        out.append((np.frombuffer(b"".join(chunks), dtype="<i2"), spec))
        grid += beat_ms
        if at >= grid:  # late past the next grid point: those beats are skipped
            grid += (at - grid) // beat_ms * beat_ms + beat_ms
    return out


def measure(
    model: BatchedSileroModel, calls: int, pattern: list[Beat], cold_mb: float
) -> dict[str, Any]:
    """CPU of ``score_frames`` over the pattern (fresh streams), with ``cold_mb`` of
    memory swept between two beats (not counted)."""
    streams = [model.new_stream() for _ in range(calls)]
    for i, stream in enumerate(streams):
        lead = lead_frames(i)
        if lead:
            model.score_frames(np.zeros(lead * FRAME_SAMPLES, np.int16), [(stream, 0, lead)])
    sweep = np.ones(int(cold_mb * (1 << 20)) // 8) if cold_mb else None
    runs, windows = model.runs, model.windows
    spent = in_run = 0
    # the model's run: the beat's one ``Session.run`` here, each round's ``infer_batch``
    # in a tree before it (the bench measures either: ``PYTHONPATH=<tree>/src``)
    hook = "_run_beat" if hasattr(model, "_run_beat") else "infer_batch"
    run = getattr(model, hook)

    def timed(*args: Any) -> Any:
        nonlocal in_run
        t0 = time.process_time_ns()
        try:
            return run(*args)
        finally:
            in_run += time.process_time_ns() - t0

    setattr(model, hook, timed)
    try:
        for pcm, spec in pattern:
            if not spec:
                continue
            if sweep is not None:
                sweep.sum()
            scored = [(streams[call], first, count) for call, first, count in spec]
            start = time.process_time_ns()
            model.score_frames(pcm, scored)
            spent += time.process_time_ns() - start
    finally:
        delattr(model, hook)
    return {
        "runs": model.runs - runs,
        "windows": model.windows - windows,
        "ns": spent,
        "in_run": in_run,
    }


def rounds(calls: int, pattern: list[Beat]) -> list[int]:
    """How many windows the call with the most has, beat by beat: the runs a beat takes
    when each round is a run."""
    carry = [lead_frames(i) * FRAME_SAMPLES % WINDOW_SAMPLES for i in range(calls)]
    out = []
    for _, spec in pattern:
        most = 0
        for call, _, count in spec:
            carry[call] += count * FRAME_SAMPLES
            most = max(most, carry[call] // WINDOW_SAMPLES)
            carry[call] %= WINDOW_SAMPLES
        out.append(most)
    return out


def report(
    calls: int, seconds: float, lag_ms: float, cold_mb: float, passes: int, beat_ms: float = 10
) -> None:
    pattern = beats(calls, seconds, lag_ms, beat_ms)
    beat_count = len(pattern)
    per_beat = np.bincount(rounds(calls, pattern))
    frames = sum(count for _, spec in pattern for _, _, count in spec)
    model = BatchedSileroModel()
    measure(model, calls, pattern[:50], 0)  # warm-up: first runs allocate
    print(
        f"{calls} calls, {seconds:g} s, {beat_count} beats ({beat_ms:g} ms grid, mean lag "
        f"{lag_ms:g} ms), "
        f"{frames} frames"
    )
    shares = ", ".join(f"{r}: {n / beat_count:.1%}" for r, n in enumerate(per_beat) if n)
    print(f"beats by the most windows of one call: {shares}")
    rows: dict[str, list[dict[str, Any]]] = {"warm": [], f"cold {cold_mb:g} MiB": []}
    for _ in range(passes):
        for label in rows:
            rows[label].append(measure(model, calls, pattern, cold_mb if "cold" in label else 0))
    first = next(iter(rows.values()))[0]
    runs, windows = first["runs"], first["windows"]
    print(
        f"runs {runs} ({runs / seconds:.0f}/s), windows {windows} ({windows / seconds:.0f}/s), "
        f"{windows / runs:.1f} windows a run"
    )
    print(
        f"{'':<16}{'µs/window':>10}{'µs/run':>9}{'core':>8}{'in the model':>14}"
        f"   (median of {passes} passes)"
    )
    for label, got in rows.items():
        ns = float(np.median([g["ns"] for g in got]))
        model_ns = float(np.median([g["in_run"] for g in got]))
        print(
            f"{label:<16}{ns / 1000 / windows:>10.1f}{ns / 1000 / runs:>9.0f}"
            f"{ns / 1e9 / seconds:>8.1%}{model_ns / ns:>14.0%}"
        )
