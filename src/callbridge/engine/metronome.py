"""One 10 ms clock per event loop, instead of a wake-up per caller frame and a timer
per call.

Every call used to wake its owner task for each caller frame (50 a second) and again
for each playout timer: at 40 calls the owners' wake-ups, queue hand-offs and
per-frame numpy calls were the largest share of the core (issue 13's profile). Here one
metronome beats on a fixed grid (``loop.call_at`` on ``start + k × period``: no drift;
a late beat skips the beats it missed and stays on the grid). On each beat it:

- takes every member's new caller frames from its ``Line`` and runs the front end for
  all of them in one pass (``frontend.py``: decode, levels, the batched VAD);
- posts each call with frames one ``Heard`` carrying them, and each call without frames
  whose core has a deadline more than ``IDLE_GRACE_S`` past an empty ``Heard``: the
  owner's one wake-up, which also pulls its playout (the core pumps after every event).
  A live call is woken by its own frames, once per 20 ms, whatever the beat.

The owner still performs everything of its own call (STYLE.md: one owner task per
call); the metronome only does the shared batch work and posts. There is no per-call
timer any more: every deadline a core has is served on the call's next wake-up, at most
one frame (20 ms) late. Nothing the caller hears depends on finer timing: playout
keeps a 200 ms lead, endpointing counts frames (which come on beats anyway), and the
rest (reprompts, hold lines, hang-up timeouts) are seconds long. A frame waits for the
next beat (≤ 10 ms), so barge-in grows by at most one beat (bench/bargein.py).

It starts with its first member and stops when the last leaves. Tests build one with
``autostart=False`` and step it with ``tick()`` on a ``ManualClock``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

from callbridge.audio.frames import FRAME_MS, ULAW_FRAME_BYTES, Framer
from callbridge.clock import Clock, MonotonicClock
from callbridge.engine.frontend import Ear, hear_all
from callbridge.engine.transport import Heard, Line
from callbridge.providers.base import BatchVad, VadStream

__all__ = ["Member", "Metronome"]

log = logging.getLogger(__name__)

PERIOD_S = FRAME_MS / 2000
"""Half a frame: a caller frame waits ≤ 10 ms for its beat (barge-in +5 ms on average;
a 20 ms beat put clear p95 at 226 ms at 20 seed calls, over the 220 ms bar)."""
IDLE_GRACE_S = FRAME_MS / 1000
"""How late a deadline may be served when no frame wakes its call: a live call's caller
frames wake it every 20 ms anyway (and the core checks every deadline on each wake), so
waking it between them for its playout would double its wake-ups for nothing the caller
hears (playout holds a 200 ms lead)."""
_IDLE = Heard()  # a beat with no frames: time passes, a deadline has come
_new = tuple.__new__  # an ``Ear`` without its ``__new__``'s Python frame (``frontend.py``)


class Member:
    """One call on the metronome: where its frames come from, where its beats go, and
    when its core next needs the time (``deadline``, kept by the owner)."""

    __slots__ = ("_framer", "batch_vad", "deadline", "hears", "line", "post", "vad", "waking")

    def __init__(
        self,
        line: Line,
        post: Callable[[Heard], None],
        *,
        vad: VadStream | None = None,
        hears: bool = True,
    ) -> None:
        self.line = line
        self.post = post
        self.vad = vad
        self.batch_vad: BatchVad | None = getattr(vad, "batch_vad", None)
        self.hears = hears  # False: the frames are only passed on (a bridged call)
        self.deadline: float | None = None
        self.waking = False  # a beat is posted and not yet taken: no second empty one
        self._framer = Framer(ULAW_FRAME_BYTES)

    def took_beat(self) -> None:
        self.waking = False

    def _ear(self) -> Ear:
        """The line's new frames as whole 20 ms frames (Twilio sends whole ones; a test
        may not: a chunk's remainder waits for the next)."""
        framer, waiting = self._framer, self.line.frames
        if len(waiting) == 1 and not framer.pending:  # the usual beat: one whole frame
            data, stamp = waiting[0]
            if len(data) == ULAW_FRAME_BYTES:
                waiting.clear()  # (taken: the line's list stays, no new one a beat)
                return Ear((data,), (stamp,), self.vad, self.batch_vad)
        taken = self.line.take_frames()
        frames: list[bytes] = []
        stamps: list[int | None] = []
        for audio in taken:
            data, stamp = audio.ulaw, audio.timestamp_ms
            if len(data) == ULAW_FRAME_BYTES and not framer.pending:
                frames.append(data)
                stamps.append(stamp)
                continue
            for index, frame in enumerate(framer.push(data)):
                frames.append(frame)
                stamps.append(None if stamp is None else stamp + index * FRAME_MS)
        return Ear(frames, stamps, self.vad, self.batch_vad)


_running: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[object, Metronome]] = (
    weakref.WeakKeyDictionary()
)


class Metronome:
    def __init__(
        self,
        clock: Clock | None = None,
        *,
        period_s: float = PERIOD_S,
        grace_s: float = IDLE_GRACE_S,
        autostart: bool = True,
    ) -> None:
        self.clock = clock or MonotonicClock()  # members' deadlines are on this clock
        self.period_s = period_s
        self.grace_s = grace_s
        self._autostart = autostart
        self._members: dict[Member, None] = {}  # in joining order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._next_at = 0.0
        self.beats = 0
        self.skipped = 0  # beats missed because the loop was late

    @classmethod
    def running(cls, clock: Clock) -> Metronome:
        """The running loop's metronome for ``clock``'s time (every ``MonotonicClock``
        reads the same time, so production has one per loop)."""
        loop = asyncio.get_running_loop()
        by_clock = _running.setdefault(loop, {})
        key: object = MonotonicClock if type(clock) is MonotonicClock else clock
        metronome = by_clock.get(key)
        if metronome is None:
            metronome = by_clock[key] = cls(clock)
        return metronome

    @property
    def members(self) -> int:
        return len(self._members)

    @property
    def beating(self) -> bool:
        return self._handle is not None

    def join(
        self,
        line: Line,
        post: Callable[[Heard], None],
        *,
        vad: VadStream | None = None,
        hears: bool = True,
    ) -> Member:
        member = Member(line, post, vad=vad, hears=hears)
        self._members[member] = None
        if self._autostart and self._handle is None:
            self._start()
        return member

    def leave(self, member: Member) -> None:
        self._members.pop(member, None)
        if not self._members and self._handle is not None:
            self._handle.cancel()
            self._stop()

    def _stop(self) -> None:
        self._handle = None
        self._loop = None  # the loop keys the registry: no reference back to it when idle

    # ------------------------------------------------------------ one beat

    def tick(self) -> None:
        """One beat: every member's frames through the front end, and its wake-up."""
        self.beats += 1
        due = self.clock.now() - self.grace_s  # a deadline at or before this is served
        hearing: list[Member] = []
        ears: list[Ear] = []
        for member in list(self._members):
            waiting = member.line.frames
            if waiting:
                if len(waiting) == 1 and member.hears and not member._framer._tail:  # (``pending``)
                    data, stamp = waiting[0]  # the usual beat: one whole frame (``_ear``)
                    if len(data) == ULAW_FRAME_BYTES:
                        waiting.clear()  # (taken: the line's list stays, no new one a beat)
                        hearing.append(member)
                        ears.append(_new(Ear, ((data,), (stamp,), member.vad, member.batch_vad)))
                        continue
                ear = member._ear()
                if ear.frames:  # (less than a frame waits for the rest)
                    if member.hears:
                        hearing.append(member)
                        ears.append(ear)
                    else:
                        member.waking = True
                        member.post(Heard(ulaw=tuple(ear.frames), stamps=tuple(ear.stamps)))
                    continue
            deadline = member.deadline
            if deadline is not None and deadline <= due and not member.waking:
                member.waking = True
                member.post(_IDLE)
        if hearing:
            for member, heard in zip(hearing, hear_all(ears), strict=True):
                member.waking = True
                member.post(heard)

    # ------------------------------------------------------------ the grid

    def _start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._next_at = loop.time() + self.period_s
        self._handle = loop.call_at(self._next_at, self._beat)

    def _beat(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            self.tick()
        except Exception:  # one bad beat must not stop every call's clock
            log.exception("metronome.beat_failed")
        if not self._members:
            self._stop()
            return
        period = self.period_s
        at = self._next_at + period
        now = loop.time()
        if at <= now:  # the loop was late by more than a beat: stay on the grid
            missed = int((now - at) // period) + 1
            self.skipped += missed
            at += missed * period
        self._next_at = at
        self._handle = loop.call_at(at, self._beat)
