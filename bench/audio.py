"""Cost of the per-frame audio work, and how much each soxr quality holds back.

Run: .venv/bin/python bench/audio.py   (prints; asserts nothing)
"""

from __future__ import annotations

import functools
import timeit
from collections.abc import Callable

from callbridge.audio import ulaw
from callbridge.audio.frames import FRAME_MS, ULAW_FRAME_BYTES, Framer
from callbridge.audio.levels import rms_dbfs, tone
from callbridge.audio.resample import StreamResampler


def per_call_us(stmt: Callable[[], object], number: int) -> float:
    best = min(timeit.repeat(stmt, number=number, repeat=5))
    return best / number * 1e6


def main() -> None:
    pcm = tone(440.0, FRAME_MS, -10.0)
    mu = ulaw.encode(pcm)
    print(f"one {FRAME_MS} ms frame at 8 kHz (best of 5):")
    print(f"  ulaw.encode  {per_call_us(lambda: ulaw.encode(pcm), 20000):7.2f} µs")
    print(f"  ulaw.decode  {per_call_us(lambda: ulaw.decode(mu), 20000):7.2f} µs")
    print(f"  rms_dbfs     {per_call_us(lambda: rms_dbfs(pcm), 20000):7.2f} µs")
    framer = Framer(ULAW_FRAME_BYTES)
    print(f"  Framer.push  {per_call_us(lambda: framer.push(mu), 20000):7.2f} µs")

    for src_hz in (24000, 16000):
        chunk = tone(440.0, FRAME_MS, -10.0, rate_hz=src_hz)
        for quality in ("QQ", "LQ", "HQ"):
            stream = StreamResampler(src_hz, 8000, quality=quality)
            cost = per_call_us(functools.partial(stream.process, chunk), 5000)
            probe = StreamResampler(src_hz, 8000, quality=quality)
            fed = 0
            while not probe.process(chunk):
                fed += FRAME_MS
            print(
                f"  stream {src_hz}->8000 {quality}: {cost:6.2f} µs/frame, "
                f"first output after {fed + FRAME_MS} ms of input"
            )


if __name__ == "__main__":
    main()
