"""Per-frame cost of the call engine (no sockets): how much of a core one call's 50
frames a second take, with each VAD, while listening and while the bot speaks; then the
same for N calls on the metronome's path (each tick: every call's frames through the
front end in one pass, one ``Heard`` per engine), against the same N engines fed frame
by frame (no event loop in either: the engine and the front end only; bench/calls.py
measures whole calls).

    .venv/bin/python bench/engine.py
"""

from __future__ import annotations

import os
import statistics
import time

from callbridge.assistant import TurnTaking
from callbridge.audio import levels, ulaw
from callbridge.engine.config import Script
from callbridge.engine.core import CallEngine
from callbridge.engine.events import ReplyAudio, ReplyDone, ReplySegment, StartReply
from callbridge.engine.frontend import Ear, hear_all
from callbridge.engine.runner import turn_rules
from callbridge.engine.transport import CallerAudio, MarkPlayed
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.vad.silero import SPEC as SILERO_SPEC
from callbridge.providers.vad.silero import SileroBlock
from callbridge.providers.vad.webrtc import SPEC as WEBRTC_SPEC

FRAMES = 3000
_SPOKEN = ulaw.encode(synthesize_pcm("I would like to check my bill please", 8000))
SPEECH_FRAMES = [_SPOKEN[i : i + 160] for i in range(0, len(_SPOKEN) - 159, 160)]
QUIET = ulaw.encode(levels.tone(300, 20, -60))
BOT_AUDIO = ulaw.encode(levels.tone(440, 60_000, -20))


def _engine(model: object) -> CallEngine:
    return CallEngine(
        turn_rules(TurnTaking.model_validate({"idleTimeoutS": 600, "maxDurationS": 3600})),
        Script(),
        vad=model.new_stream(),  # type: ignore[attr-defined]
        vad_threshold=model.threshold,  # type: ignore[attr-defined]
        stt_enabled=False,
    )


def _listening(model: object) -> list[float]:
    engine, now, costs = _engine(model), 0.0, []
    engine.start(now)
    for i in range(FRAMES):
        now += 0.02
        frame = QUIET if (i // 50) % 2 else SPEECH_FRAMES[i % len(SPEECH_FRAMES)]
        t0 = time.perf_counter_ns()
        engine.handle(CallerAudio(frame, i * 20), now)
        engine.take_commands()
        costs.append((time.perf_counter_ns() - t0) / 1000)
    return costs


def _speaking(model: object) -> list[float]:
    """The bot plays a 60 s reply while the caller is quiet: VAD plus pacing per frame."""
    engine, now, costs = _engine(model), 0.0, []
    engine.start(now)
    for i, frame in enumerate(SPEECH_FRAMES):
        now += 0.02
        engine.handle(CallerAudio(frame, i * 20), now)
    for _ in range(30):
        now += 0.02
        engine.handle(CallerAudio(QUIET), now)
    start = next(c for c in engine.take_commands() if isinstance(c, StartReply))
    engine.handle(ReplySegment(start.reply_id, 0, "a long reply"), now)
    engine.handle(ReplyAudio(start.reply_id, 0, BOT_AUDIO), now)
    engine.handle(ReplyDone(start.reply_id), now)
    for i in range(FRAMES):
        now += 0.02
        t0 = time.perf_counter_ns()
        engine.handle(CallerAudio(QUIET, 2000 + i * 20), now)
        for command in engine.take_commands():
            if type(command).__name__ == "SendMark":
                engine.handle(MarkPlayed(command.name), now)  # type: ignore[attr-defined]
        costs.append((time.perf_counter_ns() - t0) / 1000)
    return costs


def _row(name: str, costs: list[float]) -> None:
    costs.sort()
    p50 = statistics.median(costs)
    p99 = costs[int(len(costs) * 0.99)]
    per_call_core = p50 * 50 / 1e6 * 100
    print(
        f"{name:<28} p50 {p50:7.1f} µs  p99 {p99:7.1f} µs  "
        f"one call = {per_call_core:5.2f} % of a core  → {100 / per_call_core:6.0f} calls/core"
    )


def _many(model: object, calls: int, ticked: bool, ticks: int = 500) -> float:
    """µs of CPU per call-frame for ``calls`` listening engines; ``ticked``: through the
    metronome's front end (decode, levels, a batching VAD's one run per tick)."""
    engines = [_engine(model) for _ in range(calls)]
    for engine in engines:
        engine.start(0.0)
    now, spent = 0.0, 0
    for tick in range(ticks):
        now += 0.02
        frames = [
            QUIET if ((tick + 7 * i) // 50) % 2 else SPEECH_FRAMES[(tick + i) % len(SPEECH_FRAMES)]
            for i in range(calls)
        ]
        t0 = time.process_time_ns()
        if ticked:
            ears = [
                Ear([frame], [tick * 20], vad, getattr(vad, "batch_vad", None))
                for vad, frame in zip((e.turn.vad for e in engines), frames, strict=True)
            ]
            for engine, heard in zip(engines, hear_all(ears), strict=True):
                engine.handle(heard, now)
                engine.take_commands()
        else:
            for engine, frame in zip(engines, frames, strict=True):
                engine.handle(CallerAudio(frame, tick * 20), now)
                engine.take_commands()
        spent += time.process_time_ns() - t0
    return spent / 1000 / (calls * ticks)


def main() -> None:
    silero = SILERO_SPEC.build(SileroBlock(), os.environ)
    webrtc_block = WEBRTC_SPEC.config.model_validate({"provider": "webrtc"})
    webrtc = WEBRTC_SPEC.build(webrtc_block, os.environ)
    print(f"engine cost per 20 ms caller frame ({FRAMES} frames each)")
    for name, model in (("silero (unbatched)", silero), ("webrtc", webrtc)):
        _row(f"{name}, listening", _listening(model))
        _row(f"{name}, bot speaking", _speaking(model))
    print("\nN listening engines, CPU per call-frame (→ % of a core per call)")
    for calls in (50, 200):
        for name, model, ticked in (
            ("webrtc, frame by frame", webrtc, False),
            ("webrtc, on the tick", webrtc, True),
            ("silero, frame by frame", silero, False),
            ("silero, on the tick (batched)", silero, True),
        ):
            us = _many(model, calls, ticked)
            print(f"{calls:4d} calls  {name:<30} {us:6.1f} µs  → {us * 50 / 1e4:5.2f} %")


if __name__ == "__main__":
    main()
