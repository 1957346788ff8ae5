"""Per-call CPU of the engine for N calls in one process, no sockets: N ``CallSession``s
on one event loop, a caller that posts each call's 20 ms frames on the line in real
time (speech, then silence while the bot answers), the fake STT/LLM/TTS of
``providers/fake.py`` (so the figure is the engine's, VAD included), and a line that
echoes each mark when its audio would have played.

    .venv/bin/python bench/calls.py 50 200 --vad silero --duration 10
    PYTHONPATH=/work/main/src .venv/bin/python bench/calls.py 50 200   # another tree

It prints the CPU of the whole process (every thread: Silero's worker too, where
there is one) per second of caller audio the engines took in (frames still waiting on
a line are not counted: a shared machine may starve the process), as a share of one
core, per call. The API it
uses (``CallSession.create``, ``Line``, ``CallerAudio``) is the same before and after
the metronome, so one script measures both.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time

from callbridge.assistant import TurnTaking
from callbridge.audio import levels, ulaw
from callbridge.engine.config import Script
from callbridge.engine.runner import turn_rules
from callbridge.engine.session import CallSession, Voice
from callbridge.engine.transport import CallerAudio, CallerHungUp, CallInfo, Line, MarkPlayed
from callbridge.providers.fake import (
    FakeLlm,
    FakeLlmBlock,
    FakeStt,
    FakeSttBlock,
    FakeTts,
    FakeTtsBlock,
)
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.providers.vad.silero import SPEC as SILERO_SPEC
from callbridge.providers.vad.silero import SileroBlock
from callbridge.providers.vad.webrtc import SPEC as WEBRTC_SPEC

_SPOKEN = ulaw.encode(synthesize_pcm("I would like to check my bill please", 8000))
_SPEECH = [_SPOKEN[i : i + 160] for i in range(0, len(_SPOKEN) - 159, 160)]
_QUIET = ulaw.encode(levels.tone(300, 20, -60))
CALLER_CYCLE = _SPEECH + [_QUIET] * 300  # say it, then 6 s of quiet while the bot answers
"""A caller's 20 ms frames, looped (bench/owners.py feeds its calls the same)."""
_CYCLE_LEN = len(CALLER_CYCLE)


class EchoLine:
    """Twilio's side without a socket: plays audio in real time, echoes marks."""

    def __init__(self, line: Line) -> None:
        self._line = line
        self._loop = asyncio.get_running_loop()
        self._play_end = 0.0

    async def send_audio(self, data: bytes) -> None:
        self._play_end = max(self._play_end, self._loop.time()) + len(data) / 8000

    async def send_mark(self, name: str) -> None:
        at = max(self._play_end, self._loop.time())
        self._loop.call_at(at, self._line.put_nowait, MarkPlayed(name))

    async def send_clear(self) -> None:
        self._play_end = 0.0

    async def hangup(self) -> None:
        pass

    async def transfer(self, to: str) -> None:
        pass


def _vad(name: str) -> object:
    if name == "silero":
        return SILERO_SPEC.build(SileroBlock(), os.environ)
    return WEBRTC_SPEC.build(WEBRTC_SPEC.config.model_validate({"provider": "webrtc"}), os.environ)


async def _run(calls: int, vad_name: str, duration_s: float, warm_s: float) -> tuple[float, int]:
    vad = _vad(vad_name)
    voice = Voice(
        vad=vad,  # type: ignore[arg-type]
        stt=FakeStt(FakeSttBlock()),
        llm=FakeLlm(FakeLlmBlock()),
        tts=FakeTts(FakeTtsBlock()),
    )
    rules = turn_rules(TurnTaking.model_validate({"idleTimeoutS": 600, "maxDurationS": 3600}))
    lines, tasks = [], []
    for i in range(calls):
        line = Line()
        session = CallSession.create(
            CallInfo(f"CA{i}", f"MZ{i}"), EchoLine(line), voice, rules, Script()
        )
        lines.append(line)
        tasks.append(asyncio.create_task(session.run(line)))
    loop = asyncio.get_running_loop()
    start = loop.time()
    posted = 0
    measured_from: tuple[float, int] | None = None
    frame = 0
    while True:
        due = int((loop.time() - start) / 0.02)
        while frame < due:  # a late caller catches up in a burst, as a network would
            for i, line in enumerate(lines):
                line.put_nowait(CallerAudio(CALLER_CYCLE[(frame + i * 7) % _CYCLE_LEN], frame * 20))
            frame += 1
            posted += calls
        elapsed = loop.time() - start
        if measured_from is None and elapsed >= warm_s:
            measured_from = (time.process_time(), posted - sum(ln.qsize() for ln in lines))
        if elapsed >= warm_s + duration_s:
            break
        await asyncio.sleep(0.02 - (elapsed % 0.02))
    assert measured_from is not None
    cpu = time.process_time() - measured_from[0]
    backlog = sum(line.qsize() for line in lines)  # posted, not yet heard by the engines
    frames = posted - backlog - measured_from[1]
    for line in lines:
        line.put_nowait(CallerHungUp())
    await asyncio.wait(tasks, timeout=10)
    return cpu, frames


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("calls", nargs="*", type=int, default=[50, 200])
    parser.add_argument("--vad", choices=("silero", "webrtc"), default="silero")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warm", type=float, default=3.0)
    args = parser.parse_args()
    gc.freeze()
    for calls in args.calls:
        cpu, frames = asyncio.run(_run(calls, args.vad, args.duration, args.warm))
        audio_s = frames * 0.02
        per_call = 100 * cpu / audio_s
        print(
            f"{calls:4d} calls ({args.vad}): {per_call:5.2f} % of a core per call "
            f"→ {100 / per_call:5.0f} calls/core  (cpu {cpu:.1f} s for {audio_s:.0f} s of audio)"
        )


if __name__ == "__main__":
    main()
