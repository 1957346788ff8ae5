"""The loopback agent's pacing, marks and clear, with a manual clock (no real sleeping)."""

from __future__ import annotations

import asyncio

from callbridge.clock import ManualClock
from callbridge.engine.transport import CallerAudio, CallerDtmf, CallerHungUp
from callbridge.engine.transport import Line as LineQueue
from callbridge.server.loopback import FRAMES_PER_MARK, LoopbackAgent


class Line:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, str, object]] = []

    async def send_audio(self, ulaw: bytes) -> None:
        self.sent.append((round(self.clock.now(), 6), "audio", ulaw))

    async def send_mark(self, name: str) -> None:
        self.sent.append((round(self.clock.now(), 6), "mark", name))

    async def send_clear(self) -> None:
        self.sent.append((round(self.clock.now(), 6), "clear", None))

    async def hangup(self) -> None:
        self.sent.append((round(self.clock.now(), 6), "hangup", None))

    async def transfer(self, to: str) -> None:
        raise AssertionError("not used")


def _agent() -> tuple[LoopbackAgent, Line, ManualClock]:
    clock = ManualClock(100.0)
    line = Line(clock)

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    return LoopbackAgent(line, clock=clock, sleep=sleep), line, clock


async def _settle() -> None:
    for _ in range(500):
        await asyncio.sleep(0)


async def test_a_burst_is_played_back_at_real_time_with_a_mark_per_second() -> None:
    agent, line, _ = _agent()
    queue = LineQueue()
    n = FRAMES_PER_MARK + 10
    # 80-byte halves: the agent must reassemble 20 ms frames itself.
    for i in range(n):
        frame = bytes([i % 256]) * 160
        queue.put_nowait(CallerAudio(frame[:80]))
        queue.put_nowait(CallerAudio(frame[80:]))
    task = asyncio.create_task(agent.run(queue))
    await _settle()
    audio = [(t, payload) for t, kind, payload in line.sent if kind == "audio"]
    assert [p for _, p in audio] == [bytes([i % 256]) * 160 for i in range(n)]
    times = [t for t, _ in audio]
    assert times == [round(100.0 + 0.02 * i, 6) for i in range(n)]
    marks = [(i, p) for i, (_, kind, p) in enumerate(line.sent) if kind == "mark"]
    assert marks == [(FRAMES_PER_MARK, "loopback-1")]  # right after the 50th frame
    queue.put_nowait(CallerHungUp())
    await asyncio.wait_for(task, 1)


async def test_an_idle_gap_restarts_the_schedule_instead_of_rushing() -> None:
    agent, line, clock = _agent()
    queue = LineQueue()
    task = asyncio.create_task(agent.run(queue))
    queue.put_nowait(CallerAudio(b"\x01" * 160))
    await _settle()
    clock.advance(5.0)  # silence from the caller
    queue.put_nowait(CallerAudio(b"\x02" * 160))
    queue.put_nowait(CallerAudio(b"\x03" * 160))
    await _settle()
    times = [t for t, kind, _ in line.sent if kind == "audio"]
    assert times == [100.0, 105.0, 105.02]
    queue.put_nowait(CallerHungUp())
    await asyncio.wait_for(task, 1)


async def test_a_key_press_clears_queued_audio() -> None:
    agent, line, _ = _agent()
    queue = LineQueue()
    for _ in range(20):
        queue.put_nowait(CallerAudio(b"\x05" * 160))
    queue.put_nowait(CallerDtmf("1"))
    queue.put_nowait(CallerHungUp())
    await asyncio.wait_for(agent.run(queue), 1)
    kinds = [kind for _, kind, _ in line.sent]
    assert "clear" in kinds
    assert kinds.count("audio") < 20  # what was queued behind the key press was dropped
