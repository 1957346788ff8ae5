"""Per-frame cost of the call engine (no sockets): how much of a core one call's 50
frames a second take, with each VAD, while listening and while the bot speaks.

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


def main() -> None:
    silero = SILERO_SPEC.build(SileroBlock(), os.environ)
    webrtc_block = WEBRTC_SPEC.config.model_validate({"provider": "webrtc"})
    webrtc = WEBRTC_SPEC.build(webrtc_block, os.environ)
    print(f"engine cost per 20 ms caller frame ({FRAMES} frames each)")
    for name, model in (("silero (unbatched)", silero), ("webrtc", webrtc)):
        _row(f"{name}, listening", _listening(model))
        _row(f"{name}, bot speaking", _speaking(model))


if __name__ == "__main__":
    main()
