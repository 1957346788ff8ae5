"""The engine's only view of the phone line, so the same engine runs behind Twilio's
socket, the simulator and tests (DESIGN.md §1: the engine never imports ``twilio``).

A frame's way in: the socket adapter (``server/media.py``) decodes it into a
``CallerAudio`` and posts it to the call's ``Line``. The call's owner has attached its
``Inbox`` to that line. An engine's owner (``shell.py``) attaches it *ticked*: the
caller's frames wait on the line, and the process's 20 ms metronome (``metronome.py``)
takes every call's new frames at once, decodes, measures and scores them in one pass and
posts each call one ``Heard`` per tick. Every other line event (marks, keys, hang-up)
goes straight to the inbox, so it may overtake frames of the same tick (≤ 20 ms). A
plain owner (the loopback, tests) gets each ``CallerAudio`` in its inbox as it comes.
The owner answers through the ``CallTransport`` (audio, marks, ``clear``, hang-up).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

from callbridge.call_events import Emit, ignore

__all__ = [
    "CallInfo",
    "CallRunner",
    "CallTransport",
    "CallerAudio",
    "CallerDtmf",
    "CallerHungUp",
    "EndCall",
    "Heard",
    "Inbox",
    "Line",
    "LineEvent",
    "LineTap",
    "MarkPlayed",
    "SayText",
]


class CallTransport(Protocol):
    """Outbound half of the line. Sends are in order; audio is μ-law 8 kHz."""

    async def send_audio(self, ulaw: bytes) -> None: ...

    async def send_mark(self, name: str) -> None:
        """Ask the far end to report ``name`` back once everything sent before it has played."""
        ...

    async def send_clear(self) -> None:
        """Drop all audio the far end has buffered but not played yet."""
        ...

    async def hangup(self) -> None:
        """End the call (Twilio: REST ``status=completed``, then close the socket)."""
        ...

    async def transfer(self, to: str) -> None:
        """Hand the caller to another number (Twilio: REST update with ``<Dial>``)."""
        ...


# Inbound half: the adapter turns what arrives into these and posts them to the session.


class CallerAudio(NamedTuple):
    """One frame of the caller, μ-law 8 kHz (normally 20 ms, 160 bytes). A
    ``NamedTuple`` like ``Heard``: one is made per frame of every call."""

    ulaw: bytes
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CallerDtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """The far end echoed a mark: the audio before it has played, or was cleared."""

    name: str


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    reason: str = "stop"


# Operator events: the server (a drain, the API of any instance) steering a live call.


@dataclass(frozen=True, slots=True)
class EndCall:
    """End the call on our side: say ``message`` (None: the assistant's own goodbye; "":
    nothing), then hang up. A drain's timeout and an API hang-up post this."""

    reason: str
    message: str | None = None


@dataclass(frozen=True, slots=True)
class SayText:
    """Say ``text`` to the caller at the next moment the bot would be listening."""

    text: str


class Heard(NamedTuple):
    """A tick's worth of one caller's 20 ms frames, already decoded, measured and (for a
    VAD that batches) scored by the metronome's shared pass, so the owner recomputes
    nothing. Empty: the tick only wakes the owner for a deadline (time passes).

    Immutable like every event, but a ``NamedTuple``, not a frozen dataclass: the
    metronome makes one per live call per beat, and a frozen dataclass's ``__init__``
    (``object.__setattr__`` per field) costs ~1.5 µs more each."""

    ulaw: tuple[bytes, ...] = ()
    stamps: tuple[int | None, ...] = ()
    pcm: bytes = b""  # every frame's PCM16, one after the other (320 bytes each)
    levels: tuple[float, ...] = ()  # dBFS per frame, exactly ``rms_dbfs`` of its PCM
    probabilities: tuple[float, ...] | None = None  # None: the owner asks its VAD per frame


LineEvent = CallerAudio | CallerDtmf | MarkPlayed | CallerHungUp | EndCall | SayText


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the line told us about the call when it connected, and ``emit``: where the
    call's events go (the adapter's per-call emit; the runner hands it to the engine)."""

    call_sid: str
    stream_sid: str
    from_number: str = ""
    to_number: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)
    emit: Emit = field(default=ignore, compare=False, repr=False)


LineTap = Callable[[LineEvent], None]
"""Sees each line event as it enters the owner's inbox (the call record's recording of
the caller); events posted before the owner attached are seen when it does."""

E = TypeVar("E")
_Future, _running_loop = asyncio.Future, asyncio.get_running_loop


class _LineSink(Protocol):
    """What a line needs of the inbox it feeds (any ``Inbox[E]``)."""

    unread_audio: int

    def put_line(self, event: LineEvent) -> None: ...


class Line:
    """The socket adapter's half of a call: where it posts what the caller does.

    The call's owner attaches its ``Inbox`` once (``Inbox.attach``); events posted
    before that wait here and go first. ``qsize`` counts the caller frames the owner
    has not taken yet: the adapter's backlog cap is about those, not about the owner's
    own events (reply audio, transcripts) that share its inbox. A ticked owner's frames
    wait in ``frames`` until the metronome takes them (``take_frames``).
    """

    def __init__(self) -> None:
        self._inbox: _LineSink | None = None
        self._early: list[LineEvent] = []
        self._taps: tuple[LineTap, ...] = ()
        self._ticked = False
        self.frames: list[CallerAudio] = []  # a ticked owner's, until the next tick

    def put_nowait(self, event: LineEvent) -> None:
        inbox = self._inbox
        if inbox is None:
            self._early.append(event)
        elif self._ticked and type(event) is CallerAudio:
            for tap in self._taps:
                tap(event)
            self.frames.append(event)
        else:
            self._deliver(inbox, event)

    def put_audio(self, audio: CallerAudio, limit: int) -> bool:
        """``put_nowait`` of a caller frame unless ``limit`` of them wait already (``qsize``);
        False: not posted. The socket adapter's per-frame post, in one call."""
        inbox = self._inbox
        if inbox is None or not self._ticked:
            if self.qsize() >= limit:
                return False
            self.put_nowait(audio)
            return True
        frames = self.frames
        if inbox.unread_audio + len(frames) >= limit:
            return False
        for tap in self._taps:
            tap(audio)
        frames.append(audio)
        return True

    def take_frames(self) -> list[CallerAudio]:
        """The frames that came since the last tick (the metronome's, once per tick)."""
        frames, self.frames = self.frames, []
        return frames

    def qsize(self) -> int:
        """Caller frames posted and not yet taken by the call's owner."""
        if self._inbox is not None:
            return self._inbox.unread_audio + len(self.frames)
        return sum(type(event) is CallerAudio for event in self._early)

    def add_tap(self, tap: LineTap) -> None:
        self._taps = (*self._taps, tap)

    def _attach(self, inbox: _LineSink, ticked: bool) -> None:
        if self._inbox is not None:
            raise RuntimeError("a line has one owner")
        self._inbox = inbox
        self._ticked = ticked
        early, self._early = self._early, []
        for event in early:
            self.put_nowait(event)

    def _deliver(self, inbox: _LineSink, event: LineEvent) -> None:
        for tap in self._taps:
            tap(event)
        inbox.put_line(event)


class Inbox(Generic[E]):
    """A call owner's one queue: its own events (``E``) and its line's, in the order
    they happened. ``get_nowait``/``empty`` let a busy loop skip a coroutine per event.

    It has one reader, the owner, so a deque and one waiting future do what
    ``asyncio.Queue`` does for many readers, with less work per event: every call's
    every tick passes through here."""

    def __init__(self) -> None:
        self._items: deque[E | LineEvent | Heard] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.unread_audio = 0  # caller frames queued here and not yet taken

    def attach(self, line: Line, *, ticked: bool = False) -> None:
        """Take ``line``'s events from now on (and those it already holds). ``ticked``:
        its caller frames wait on the line for the metronome, and come as ``Heard``."""
        line._attach(self, ticked)

    def put_heard(self, heard: Heard) -> None:
        """The metronome's post: a tick's frames count as unread until taken."""
        self.unread_audio += len(heard.ulaw)
        self._items.append(heard)  # (``_put``, inline: every live call, every beat)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def put_nowait(self, event: E) -> None:
        self._put(event)

    def put_line(self, event: LineEvent) -> None:
        if type(event) is CallerAudio:
            self.unread_audio += 1
        self._put(event)

    def _put(self, event: E | LineEvent | Heard) -> None:
        self._items.append(event)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        """Everything waiting: the owner's own events and the line's."""
        return len(self._items)

    def get_nowait(self) -> E | LineEvent | Heard:
        if not self._items:
            raise asyncio.QueueEmpty
        event = self._items.popleft()
        if type(event) is CallerAudio:
            self.unread_audio -= 1
        elif type(event) is Heard:
            self.unread_audio -= len(event.ulaw)
        return event

    async def get(self) -> E | LineEvent | Heard:
        while not self._items:
            await self.readable()
        return self.get_nowait()

    def readable(self) -> asyncio.Future[None]:
        """Done once an event is waiting (already, if one is): what ``get`` awaits, for
        an owner that takes with ``get_nowait`` (no coroutine per wake-up)."""
        waiting = self._waiter
        if waiting is not None and not waiting.done():  # (a cancelled reader's is done)
            raise RuntimeError("an inbox has one reader")
        # A ``Future`` on the running loop, as ``loop.create_future`` makes it, without
        # asyncio's Python ``create_future`` in between (every call, every beat).
        waiter: asyncio.Future[None] = _Future(loop=_running_loop())
        if self._items:
            waiter.set_result(None)
            self._waiter = None
        else:
            self._waiter = waiter  # ``_put`` wakes it
        return waiter


CallRunner = Callable[[CallInfo, CallTransport, Line], Awaitable[None]]
"""Serves one call: attaches an ``Inbox`` to the line and reads it until
``CallerHungUp``, talking back through the transport. The socket adapter owns the line;
the runner owns the call."""
