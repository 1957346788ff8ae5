"""Twilio's outbound playback buffer, modelled so the simulator hears what a caller hears.

How it works: the server may send audio ahead of real time; Twilio queues it and plays
it at 8000 bytes of μ-law per second. A ``mark`` is queued behind the audio sent before
it and is echoed when playback reaches it; ``clear`` drops the queued audio and echoes
every pending mark at once. When the queue runs dry the caller hears nothing: inside a
reply that is an *underrun* (a gap the caller notices).

Sans-I/O: the owner feeds what arrives and calls ``advance()`` on its own schedule; time
comes from an injected clock, so tests move it by hand.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from callbridge.clock import Clock

__all__ = [
    "AudioPlayed",
    "BotSpeechEnded",
    "BotSpeechStarted",
    "MarkEchoed",
    "PlaybackBuffer",
    "PlaybackEvent",
    "Underrun",
]

BYTES_PER_S = 8000  # μ-law 8 kHz: one byte per sample


@dataclass(frozen=True, slots=True)
class AudioPlayed:
    """``ulaw`` started playing at ``start_s`` (client clock)."""

    start_s: float
    ulaw: bytes
    audible: bool


@dataclass(frozen=True, slots=True)
class MarkEchoed:
    """Twilio sends the mark back; ``cleared`` means it was flushed, not reached."""

    name: str
    at_s: float
    cleared: bool


@dataclass(frozen=True, slots=True)
class BotSpeechStarted:
    """The first audible byte of a reply reached the caller's ear."""

    at_s: float


@dataclass(frozen=True, slots=True)
class BotSpeechEnded:
    """The reply stopped: the buffer stayed dry for the reply gap, or was cleared."""

    at_s: float
    cleared: bool


@dataclass(frozen=True, slots=True)
class Underrun:
    """Playback ran dry inside a reply for ``gap_ms`` before more audio came."""

    at_s: float
    gap_ms: float


PlaybackEvent = AudioPlayed | MarkEchoed | BotSpeechStarted | BotSpeechEnded | Underrun


@dataclass(slots=True)
class _Chunk:
    ulaw: bytes
    audible: bool


@dataclass(frozen=True, slots=True)
class _Mark:
    name: str


class PlaybackBuffer:
    """The queue Twilio plays from, one per call.

    ``reply_gap_ms``: a dry spell at least this long ends the reply (the bot is done);
    a shorter one followed by more audio is an underrun.
    """

    def __init__(self, clock: Clock, *, reply_gap_ms: float = 500.0) -> None:
        self._clock = clock
        self._gap_s = reply_gap_ms / 1000.0
        self._items: deque[_Chunk | _Mark] = deque()
        self._offset = 0  # bytes of the head chunk already played
        self._buffered = 0  # bytes queued and not yet played
        self._cursor_s: float | None = None  # when the next queued byte starts; None = dry
        self._dry_since_s: float | None = None
        self._speaking = False
        self._reply_played_bytes = 0
        self.underruns = 0
        self.underrun_ms = 0.0
        self.cleared_bytes = 0
        self.played_bytes = 0

    # ------------------------------------------------------------ state

    @property
    def speaking(self) -> bool:
        """A reply is playing (audible audio started and has not ended)."""
        return self._speaking

    @property
    def buffered_ms(self) -> float:
        return self._buffered * 1000.0 / BYTES_PER_S

    @property
    def reply_played_ms(self) -> float:
        """Audio played since the current reply became audible (0 when not speaking)."""
        return self._reply_played_bytes * 1000.0 / BYTES_PER_S if self._speaking else 0.0

    @property
    def dry_since_s(self) -> float | None:
        """When playback last ran dry, while it still is; None while audio plays."""
        return self._dry_since_s if self._cursor_s is None else None

    # ------------------------------------------------------------ inputs

    def receive_media(self, ulaw: bytes, *, audible: bool) -> list[PlaybackEvent]:
        events = self.advance()
        if not ulaw:
            return events
        now = self._clock.now()
        if self._cursor_s is None:
            self._cursor_s = now
            if self._speaking and self._dry_since_s is not None:
                gap_ms = (now - self._dry_since_s) * 1000.0
                self.underruns += 1
                self.underrun_ms += gap_ms
                events.append(Underrun(self._dry_since_s, gap_ms))
            self._dry_since_s = None
        self._items.append(_Chunk(ulaw, audible))
        self._buffered += len(ulaw)
        return events

    def receive_mark(self, name: str) -> list[PlaybackEvent]:
        """Queue a mark behind the audio; with nothing queued Twilio echoes it at once."""
        events = self.advance()
        if self._buffered == 0:
            events.append(MarkEchoed(name, self._clock.now(), cleared=False))
        else:
            self._items.append(_Mark(name))
        return events

    def receive_clear(self) -> list[PlaybackEvent]:
        events = self.advance()
        now = self._clock.now()
        for item in self._items:
            if isinstance(item, _Mark):
                events.append(MarkEchoed(item.name, now, cleared=True))
        self.cleared_bytes += self._buffered
        self._items.clear()
        self._offset = 0
        self._buffered = 0
        self._cursor_s = None
        self._dry_since_s = None
        if self._speaking:
            self._speaking = False
            events.append(BotSpeechEnded(now, cleared=True))
        return events

    def advance(self) -> list[PlaybackEvent]:
        """Play everything due by now; return what happened, in order."""
        now = self._clock.now()
        events: list[PlaybackEvent] = []
        while self._items and self._cursor_s is not None:
            head = self._items[0]
            if isinstance(head, _Mark):
                self._items.popleft()
                events.append(MarkEchoed(head.name, self._cursor_s, cleared=False))
                continue
            due = int((now - self._cursor_s) * BYTES_PER_S + 1e-6)
            n = min(len(head.ulaw) - self._offset, due)
            if n <= 0:
                break
            self._play(head, n, events)
        if self._cursor_s is not None and self._buffered == 0:
            self._dry_since_s = self._cursor_s
            self._cursor_s = None
        if (
            self._speaking
            and self._cursor_s is None
            and self._dry_since_s is not None
            and now - self._dry_since_s >= self._gap_s
        ):
            self._speaking = False
            events.append(BotSpeechEnded(self._dry_since_s, cleared=False))
        return events

    # ------------------------------------------------------------ private

    def _play(self, head: _Chunk, n: int, events: list[PlaybackEvent]) -> None:
        assert self._cursor_s is not None
        start = self._cursor_s
        if head.audible and not self._speaking:
            self._speaking = True
            self._reply_played_bytes = 0
            events.append(BotSpeechStarted(start))
        piece = head.ulaw[self._offset : self._offset + n]
        events.append(AudioPlayed(start, piece, head.audible))
        self._cursor_s = start + n / BYTES_PER_S
        self._offset += n
        self._buffered -= n
        self.played_bytes += n
        if self._speaking:
            self._reply_played_bytes += n
        if self._offset == len(head.ulaw):
            self._items.popleft()
            self._offset = 0
