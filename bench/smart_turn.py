"""What the Smart Turn end-of-turn model costs, and whether the 20 ms frames feel it.

    .venv/bin/python bench/smart_turn.py            # pinned to core 0
    .venv/bin/python bench/smart_turn.py --core 1 --seconds 10

1. Cost: CPU time (the worker thread's own clock, so other processes on a shared
   machine do not count) of the features alone and of a whole judgment, for a short and
   a full-window turn, run one by one and batched as many calls would ask at once.
2. The hot path: on one core, an event loop does a call-like share of work every 20 ms
   (the server's frame path) while judgments are asked for back to back; the figure is
   how late its 20 ms ticks fire, with no judgments, with the judge thread at the
   loop's priority and at the judge's own (``nice`` +10, the default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time

import numpy as np

from callbridge.audio import ulaw
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.turn.smart_turn import WORKER_NICE, SmartTurn, _features, load_smart_turn
from callbridge.simulator.metrics import percentile

SHORT = "What is my balance please?"
LONG = ("I would like to check the balance on my account please, and then I would also "
        "like to know when the last payment came in.")


def _line(text: str) -> bytes:
    return ulaw.decode(ulaw.encode(synthesize_pcm(text, 8000)))


def _cpu_ms(fn: object, repeat: int) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        fn()
        times.append((time.thread_time() - started) * 1000)
    return statistics.median(times)


def cost(model: SmartTurn, repeat: int) -> None:
    for label, pcm in (("short turn", _line(SHORT)), ("8 s window", _line(LONG))):
        seconds = len(pcm) / 16000
        model.predict([pcm])  # the first run allocates
        features = _cpu_ms(lambda p=pcm: _features(p), repeat)
        print(f"{label} ({seconds:.1f} s of speech): features {features:5.1f} ms of a core")
        for batch in (1, 2, 4, 8):
            per = _cpu_ms(lambda p=pcm, b=batch: model.predict([p] * b), repeat) / batch
            print(f"  batch {batch}: {per:6.1f} ms of a core per judgment")


async def _frames(model: SmartTurn | None, seconds: float, work_ms: float) -> list[float]:
    """Ticks every 20 ms doing ``work_ms`` of numpy each; judgments back to back."""
    loop = asyncio.get_running_loop()
    pcm = _line(SHORT)
    stop = loop.time() + seconds

    async def judge_forever() -> None:
        while model is not None and loop.time() < stop:
            await model.judge(pcm)

    judging = asyncio.create_task(judge_forever())
    late: list[float] = []
    block = np.random.default_rng(0).standard_normal(4000)
    due = loop.time() + 0.02
    while due < stop:
        await asyncio.sleep(max(0.0, due - loop.time()))
        late.append((loop.time() - due) * 1000)
        spin_until = time.perf_counter() + work_ms / 1000
        while time.perf_counter() < spin_until:
            np.fft.rfft(block)
        due += 0.02
    with contextlib.suppress(asyncio.CancelledError):
        await judging
    return late


def hot_path(seconds: float, work_ms: float) -> None:
    rows: list[tuple[str, SmartTurn | None]] = [("no judgments", None)]
    for label, nice in (("judging, judge at the loop's priority", 0),
                        (f"judging, judge at nice +{WORKER_NICE}", WORKER_NICE)):
        rows.append((label, load_smart_turn(nice=nice)))
    print(f"\n20 ms ticks on one core, {work_ms:g} ms of work each ({work_ms / 0.2:.0f} % "
          f"of the core, the frame path's share), judgments back to back:")
    for label, model in rows:
        late = asyncio.run(_frames(model, seconds, work_ms))
        judged = f", {model.judged} judgments" if model is not None else ""
        print(f"  {label:40s} tick late p50 {percentile(late, 50):5.1f} ms, "
              f"p99 {percentile(late, 99):5.1f} ms, max {max(late):6.1f} ms{judged}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/smart_turn.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=8.0, help="per hot-path row")
    parser.add_argument("--work-ms", type=float, default=8.0, help="per 20 ms tick")
    args = parser.parse_args()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.core})
    model = load_smart_turn()
    if model is None:
        print("no model file: run `python scripts/fetch_smart_turn.py` (make does)")
        return 1
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}, core {args.core}")
    cost(model, args.repeat)
    hot_path(args.seconds, args.work_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
