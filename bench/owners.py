"""CPU of the calls' engines per call-frame, the VAD's model left out: N whole
``CallSession``s on one event loop, the metronome stepped by hand on a manual clock
(so a shared machine's stalls do not change what runs), a caller that posts each call's
20 ms frames (speech, then quiet while the bot answers), the fake STT/LLM/TTS of
``providers/fake.py`` without their delays, and a line that echoes each mark when its
audio would have played.

    .venv/bin/python bench/owners.py [calls] [--seconds 10] [--repeat 3] [--uvloop]

``--uvloop``: on uvloop's event loop, which is what the server runs (uvicorn's
``loop="auto"``); the default is asyncio's own, whose ``call_soon`` and ``_run_once`` are
Python and count per wake-up. Instructions per call-frame, by difference (imports and
warm-up cancel out)::

    OPENBLAS_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file=/tmp/o.1 \
        .venv/bin/python bench/owners.py 50 --seconds 1 --repeat 1
    # the same with --seconds 3 into /tmp/o.3; then
    # (summary of /tmp/o.3 - summary of /tmp/o.1) / (50 calls × 2 s × 50 frames/s)

Leave out what ``callgrind_annotate`` puts in onnxruntime's and OpenBLAS's objects: their
idle threads spin for wall time, not work (±20k a call-frame between two runs of one tree
when the machine is busy); ``PYTHONHASHSEED=0`` keeps two runs' event order the same.

The VAD is a stand-in that batches like Silero (``BatchVad``, one numpy pass a tick),
so what is measured is the engine part of issue 13's profile: the metronome's beat and
front end, each owner's wake-up (``Shell.loop``, ``Inbox``), ``CallEngine.handle`` and
``next_deadline``, and the owner's commands; the fake providers are in it too, the same
before and after. bench/calls.py measures the same in real time with Silero; this one
repeats more closely (best of ``--repeat`` runs, CPU time).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import time
from collections.abc import Sequence

import numpy as np
from calls import CALLER_CYCLE  # the same caller as bench/calls.py (bench/ is on the path)
from numpy.typing import NDArray

from callbridge.assistant import TurnTaking
from callbridge.clock import ManualClock
from callbridge.engine.config import Script
from callbridge.engine.metronome import Metronome
from callbridge.engine.runner import turn_rules
from callbridge.engine.session import CallSession, Voice
from callbridge.engine.transport import CallerAudio, CallerHungUp, CallInfo, Line, MarkPlayed
from callbridge.providers.base import VadStream
from callbridge.providers.fake import (
    FakeLlm,
    FakeLlmBlock,
    FakeStt,
    FakeSttBlock,
    FakeTts,
    FakeTtsBlock,
)

_CYCLE_LEN = len(CALLER_CYCLE)

_WARM_BEATS = 300
_BEAT_S = 0.01


class LoudIsSpeech:
    """A VAD that batches like Silero, without a model: a loud frame is speech."""

    name = "loud"
    threshold = 0.5

    @property
    def batch_vad(self) -> LoudIsSpeech:
        return self

    def new_stream(self) -> LoudIsSpeech:
        return self

    def speech_probability(self, pcm16: bytes) -> float:
        return float(np.abs(np.frombuffer(pcm16, np.int16).astype(np.int32)).mean() > 300)

    def reset(self) -> None:
        pass

    def score_frames(
        self, pcm16: NDArray[np.int16], calls: Sequence[tuple[VadStream, int, int]]
    ) -> list[float]:
        loud = np.abs(pcm16.reshape(-1, 160).astype(np.int32)).mean(axis=1) > 300
        return [float(x) for x in loud.tolist()]


class EchoLine:
    """Twilio's side on the manual clock: plays audio in real time, echoes marks."""

    def __init__(self, line: Line, clock: ManualClock, echoes: list[tuple[float, int, str, Line]]):
        self._line, self._clock, self._echoes = line, clock, echoes
        self._play_end = 0.0

    async def send_audio(self, data: bytes) -> None:
        self._play_end = max(self._play_end, self._clock.now()) + len(data) / 8000

    async def send_mark(self, name: str) -> None:
        at = max(self._play_end, self._clock.now())
        heapq.heappush(self._echoes, (at, id(self), name, self._line))

    async def send_clear(self) -> None:
        self._play_end = 0.0

    async def hangup(self) -> None:
        pass

    async def transfer(self, to: str) -> None:
        pass


async def _run(calls: int, seconds: float) -> float:
    """µs of CPU per call-frame after the warm-up."""
    vad = LoudIsSpeech()
    voice = Voice(
        vad=vad,
        stt=FakeStt(FakeSttBlock()),
        llm=FakeLlm(FakeLlmBlock(first_token_ms=0, chunk_interval_ms=0)),
        tts=FakeTts(FakeTtsBlock(first_audio_ms=0)),
    )
    rules = turn_rules(TurnTaking.model_validate({"idleTimeoutS": 600, "maxDurationS": 3600}))
    clock = ManualClock(1000.0)
    metronome = Metronome(clock, autostart=False)
    echoes: list[tuple[float, int, str, Line]] = []
    lines, tasks = [], []
    for i in range(calls):
        line = Line()
        session = CallSession.create(
            CallInfo(f"CA{i}", f"MZ{i}"), EchoLine(line, clock, echoes), voice, rules,
            Script(), clock=clock, metronome=metronome,
        )
        lines.append(line)
        tasks.append(asyncio.create_task(session.run(line)))
    for _ in range(5):
        await asyncio.sleep(0)
    beats = _WARM_BEATS + int(seconds / _BEAT_S)
    started = 0
    for beat in range(beats):
        if beat == _WARM_BEATS:
            started = time.process_time_ns()
        clock.advance(_BEAT_S)
        now = clock.now()
        if beat % 2 == 0:  # a frame every other beat, as a live caller sends them
            frame = beat // 2
            for i, line in enumerate(lines):
                line.put_nowait(CallerAudio(CALLER_CYCLE[(frame + i * 7) % _CYCLE_LEN], frame * 20))
        while echoes and echoes[0][0] <= now:
            _, _, name, line = heapq.heappop(echoes)
            line.put_nowait(MarkPlayed(name))
        metronome.tick()
        for _ in range(6):  # the owners, their replies and transcribers run
            await asyncio.sleep(0)
    spent = time.process_time_ns() - started
    for line in lines:
        line.put_nowait(CallerHungUp())
    await asyncio.wait(tasks, timeout=5)
    return spent / 1000 / (calls * (beats - _WARM_BEATS) / 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("calls", nargs="*", type=int, default=[200])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true", help="the server's event loop")
    args = parser.parse_args()
    run = asyncio.run
    if args.uvloop:
        import uvloop

        run = uvloop.run
    gc.freeze()
    for calls in args.calls:
        runs = [run(_run(calls, args.seconds)) for _ in range(args.repeat)]
        print(
            f"{calls:4d} calls: {min(runs):5.1f} µs of CPU per call-frame (best of "
            f"{len(runs)}; runs {', '.join(f'{r:.1f}' for r in runs)})"
            f" → {min(runs) * 50 / 1e4:5.2f} % of a core per call"
        )


if __name__ == "__main__":
    main()
