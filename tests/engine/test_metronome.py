"""The process's 20 ms metronome, stepped by hand on a manual clock: every call's frames
of a tick in one pass, one wake-up per call per tick, deadlines served on the beat, and
a grid that does not drift."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from callbridge.audio import levels, ulaw
from callbridge.clock import ManualClock
from callbridge.engine import frontend
from callbridge.engine.frontend import Ear, hear_all
from callbridge.engine.metronome import Metronome
from callbridge.engine.transport import CallerAudio, CallerDtmf, Heard, Inbox, Line

SPEECH = ulaw.encode(levels.tone(300, 20, -12))
SILENCE = b"\xff" * 160


class CountingVad:
    """A VAD that batches: remembers each run, scores a frame by its loudness."""

    def __init__(self) -> None:
        self.runs: list[list[tuple[object, int, int]]] = []

    def score_frames(self, pcm16: np.ndarray, calls: list) -> list[float]:
        self.runs.append(list(calls))
        loud = np.abs(pcm16.reshape(-1, 160).astype(np.int64)).max(axis=1) > 1000
        return [float(x) for x in loud]


class BatchedStream:
    def __init__(self, model: CountingVad) -> None:
        self.batch_vad = model

    def speech_probability(self, pcm16: bytes) -> float:
        raise AssertionError("a batched stream is scored by the metronome, not per frame")

    def reset(self) -> None:
        pass


class Call:
    """A call on the metronome: its line, and the beats its owner would receive."""

    def __init__(self, metronome: Metronome, vad: object | None = None, hears: bool = True):
        self.line = Line()
        self.inbox: Inbox[object] = Inbox()
        self.inbox.attach(self.line, ticked=True)
        self.member = metronome.join(self.line, self.inbox.put_heard, vad=vad, hears=hears)  # type: ignore[arg-type]

    def beats(self) -> list[Heard]:
        got = []
        while not self.inbox.empty():
            event = self.inbox.get_nowait()
            assert isinstance(event, Heard)
            got.append(event)
            self.member.took_beat()
        return got


def test_every_calls_frames_of_a_tick_go_through_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = []
    real = frontend.ulaw_codec.decode_codes
    monkeypatch.setattr(
        frontend.ulaw_codec, "decode_codes", lambda codes: decodes.append(len(codes)) or real(codes)
    )
    metronome = Metronome(ManualClock(), autostart=False)
    vad = CountingVad()
    calls = [Call(metronome, BatchedStream(vad)) for _ in range(3)]
    calls[0].line.put_nowait(CallerAudio(SPEECH, 0))
    calls[0].line.put_nowait(CallerAudio(SILENCE, 20))  # a burst: two frames this tick
    calls[2].line.put_nowait(CallerAudio(SPEECH, 0))
    assert calls[0].line.qsize() == 2  # waiting on the line, still counted
    metronome.tick()
    assert decodes == [3 * 160]  # one decode for all three frames of two calls
    assert len(vad.runs) == 1  # one VAD run for both calls
    assert [(first, count) for _, first, count in vad.runs[0]] == [(0, 2), (2, 1)]
    first, third = calls[0].beats(), calls[2].beats()
    assert calls[1].beats() == []  # nothing heard, no deadline: not woken
    assert len(first) == 1 and first[0].ulaw == (SPEECH, SILENCE) and first[0].stamps == (0, 20)
    assert first[0].probabilities == (1.0, 0.0) and third[0].probabilities == (1.0,)
    assert calls[0].line.qsize() == 0


def test_precomputed_pcm_and_levels_are_exactly_the_per_frame_path() -> None:
    rng = random.Random(7)
    frames = [bytes(rng.randrange(256) for _ in range(160)) for _ in range(40)]
    frames += [SILENCE, b"\x7f" * 160, b"\x00" * 160, SPEECH]  # silence both ways, full scale
    ears = [Ear(frames[i : i + 11], [None] * len(frames[i : i + 11]), None, None)
            for i in range(0, len(frames), 11)]
    heard = hear_all(ears)
    for ear, beat in zip(ears, heard, strict=True):
        assert beat.probabilities is None  # no batching VAD: the owner asks its own
        for index, frame in enumerate(ear.frames):
            pcm = ulaw.decode(frame)
            assert beat.pcm[index * 320 : index * 320 + 320] == pcm
            assert beat.levels[index] == levels.rms_dbfs(pcm)  # exactly, not approximately


def test_a_call_is_woken_at_most_once_per_tick_and_deadlines_on_the_beat() -> None:
    clock = ManualClock(10.0)
    metronome = Metronome(clock, grace_s=0.0, autostart=False)
    call = Call(metronome)
    for stamp in range(0, 100, 20):
        call.line.put_nowait(CallerAudio(SILENCE, stamp))
    metronome.tick()
    beats = call.beats()
    assert len(beats) == 1 and len(beats[0].ulaw) == 5  # five frames, one wake-up
    call.member.deadline = 10.05
    clock.advance(0.02)
    metronome.tick()
    assert call.beats() == []  # not due yet
    clock.advance(0.04)  # 10.06: the first beat at or after the deadline serves it
    metronome.tick()
    metronome.tick()  # its owner has not taken it yet: no second empty wake-up
    assert call.inbox.qsize() == 1
    assert call.beats() == [Heard()]
    metronome.tick()  # still due (the owner did not move it): one per tick, never a spin
    assert call.beats() == [Heard()]
    call.member.deadline = None
    metronome.tick()
    assert call.beats() == []


def test_a_deadline_waits_its_grace_for_the_call_s_own_frames() -> None:
    """A live call's frames wake it every 20 ms and its core checks every deadline then:
    a due deadline wakes it on its own only once it is ``grace_s`` late."""
    clock = ManualClock(10.0)
    metronome = Metronome(clock, period_s=0.01, grace_s=0.02, autostart=False)
    call = Call(metronome)
    call.member.deadline = 10.005
    for _ in range(2):
        clock.advance(0.01)
        metronome.tick()
        assert call.beats() == []  # 10.01, 10.02: due, but within its grace
    clock.advance(0.01)
    metronome.tick()  # 10.03: 25 ms late
    assert call.beats() == [Heard()]
    call.line.put_nowait(CallerAudio(SILENCE, 0))
    clock.advance(0.01)
    metronome.tick()  # a frame: the wake-up that serves the deadline too
    assert [len(b.ulaw) for b in call.beats()] == [1]


def test_other_line_events_do_not_wait_for_the_beat_and_taps_see_frames_once() -> None:
    metronome = Metronome(ManualClock(), autostart=False)
    line = Line()
    seen: list[object] = []
    line.add_tap(seen.append)
    line.put_nowait(CallerAudio(SILENCE, 0))  # before the owner: held, then on the line
    inbox: Inbox[object] = Inbox()
    inbox.attach(line, ticked=True)
    metronome.join(line, inbox.put_heard)
    line.put_nowait(CallerDtmf("5"))
    assert inbox.get_nowait() == CallerDtmf("5") and inbox.empty()
    metronome.tick()
    assert inbox.get_nowait() == Heard(
        ulaw=(SILENCE,), stamps=(0,), pcm=ulaw.decode(SILENCE), levels=(-120.0,)
    )
    assert seen == [CallerAudio(SILENCE, 0), CallerDtmf("5")]


def test_odd_chunks_become_whole_frames_and_a_bridge_only_passes_them_on() -> None:
    metronome = Metronome(ManualClock(), autostart=False)
    call = Call(metronome, hears=False)
    call.line.put_nowait(CallerAudio(SILENCE[:100], 0))
    metronome.tick()
    assert call.beats() == []  # less than a frame: it waits for the rest
    call.line.put_nowait(CallerAudio(SILENCE[:100] + SPEECH, 20))
    metronome.tick()
    (beat,) = call.beats()
    assert beat.ulaw == ((SILENCE[:100] * 2)[:160], (SILENCE[:40] + SPEECH)[:160])
    assert beat.pcm == b"" and beat.levels == ()  # nothing decoded for a bridged call


class FakeHandle:
    def cancel(self) -> None:
        pass


class FakeLoop:
    def __init__(self) -> None:
        self.t = 0.0
        self.calls: list[float] = []

    def time(self) -> float:
        return self.t

    def call_at(self, at: float, callback: object) -> FakeHandle:
        self.calls.append(at)
        return FakeHandle()


def test_the_grid_does_not_drift_and_a_late_beat_skips_to_the_grid() -> None:
    metronome = Metronome(ManualClock(), period_s=0.02, autostart=False)
    Call(metronome)
    loop = FakeLoop()
    metronome._loop = loop  # type: ignore[assignment]
    metronome._next_at = 1.0
    for late in (0.003, 0.0, 0.011):  # each beat runs a little late...
        loop.t = metronome._next_at + late
        metronome._beat()
    assert loop.calls == pytest.approx([1.02, 1.04, 1.06])  # ...the next is still on the grid
    loop.t = 1.06 + 0.075  # a stall of almost four beats
    metronome._beat()
    assert loop.calls[-1] == pytest.approx(1.14) and metronome.skipped == 3


async def test_it_beats_while_calls_are_on_it_and_stops_with_the_last() -> None:
    clock = ManualClock()
    metronome = Metronome.running(clock)
    assert Metronome.running(clock) is metronome  # one per loop and time scale
    assert not metronome.beating
    call = Call(metronome)
    assert metronome.beating
    call.line.put_nowait(CallerAudio(SPEECH, 0))
    heard = await asyncio.wait_for(call.inbox.get(), 1.0)  # the real grid, ~10 ms
    assert isinstance(heard, Heard) and heard.ulaw == (SPEECH,)
    metronome.leave(call.member)
    assert not metronome.beating and metronome.members == 0
