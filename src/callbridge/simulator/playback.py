"""Twilio's outbound playback buffer, modelled so the simulator hears what a caller hears.

How it works: the server may send audio ahead of real time; Twilio queues it and plays
it at 8000 bytes of μ-law per second. A ``mark`` is queued behind the audio sent before
it and is echoed when playback reaches it; ``clear`` drops the queued audio and echoes
every pending mark at once. When the queue runs dry the caller hears nothing: inside a
reply that is an *underrun* (a gap the caller notices).

Sans-I/O: the owner feeds what arrives and calls ``advance()`` on its own schedule; time
comes from an injected clock, so tests move it by hand. ``PlaybackModel`` holds the rules
(on ``audio.playhead.PlayHead``) and says what happens through hooks: ``PlaybackBuffer``
turns them into event objects, the load benchmark's ``lean.LeanPlayback`` books them
straight into its metrics.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from callbridge.audio.playhead import PlayHead
from callbridge.clock import Clock

__all__ = [
    "AudioPlayed",
    "BotSpeechEnded",
    "BotSpeechStarted",
    "MarkEchoed",
    "PlaybackBuffer",
    "PlaybackEvent",
    "PlaybackModel",
    "Queued",
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


Queued = tuple[float, int, bool, bytes]
"""Audio as it arrived: when it starts playing, its size, audible, the bytes (empty where
the owner keeps only counts)."""


class PlaybackModel:
    """Twilio's playback queue, in bytes on a ``PlayHead``; every method takes the time.

    ``reply_gap_ms``: a dry spell at least this long ends the reply (the bot is done);
    a shorter one followed by more audio is an underrun. The ``_on_*`` hooks say what
    happened, in order; a subclass keeps what it needs of it.
    """

    def __init__(self, *, reply_gap_ms: float = 500.0) -> None:
        self._gap_s = reply_gap_ms / 1000.0
        self._head = PlayHead(0.0)
        self._items: deque[Queued | str] = deque()  # audio, or a mark's name
        self._offset = 0  # bytes of the head chunk already played
        self._buffered = 0  # bytes queued and not yet played
        self._reply_played = 0
        self.speaking = False  # a reply is playing (audible audio started, not ended)
        self.underruns = 0
        self.underrun_ms = 0.0
        self.cleared_bytes = 0
        self.played_bytes = 0

    # ------------------------------------------------------------ state

    @property
    def buffered_ms(self) -> float:
        return self._buffered * 1000.0 / BYTES_PER_S

    @property
    def reply_played_ms(self) -> float:
        """Audio played since the current reply became audible (0 when not speaking)."""
        return self._reply_played * 1000.0 / BYTES_PER_S if self.speaking else 0.0

    # ------------------------------------------------------------ what arrives

    def media(self, now: float, size: int, audible: bool, ulaw: bytes = b"") -> None:
        self.play(now)
        if not size:
            return
        if self._buffered == 0 and self.speaking:
            dry_since = self._head.end
            gap_ms = (now - dry_since) * 1000.0
            self.underruns += 1
            self.underrun_ms += gap_ms
            self._on_underrun(dry_since, gap_ms)
        start = self._head.queue(now, size / BYTES_PER_S)
        self._items.append((start, size, audible, ulaw))
        self._buffered += size

    def mark(self, now: float, name: str) -> None:
        """Queue a mark behind the audio; with nothing queued Twilio echoes it at once."""
        self.play(now)
        if self._buffered == 0:
            self._on_mark(name, now, False)
        else:
            self._items.append(name)

    def clear(self, now: float) -> None:
        self.play(now)
        for item in self._items:
            if isinstance(item, str):
                self._on_mark(item, now, True)
        self.cleared_bytes += self._buffered
        self._items.clear()
        self._offset = self._buffered = 0
        self._head.clear(now)
        if self.speaking:
            self.speaking = False
            self._on_speech_ended(now, True)

    def play(self, now: float) -> None:
        """Play everything due by ``now``."""
        items = self._items
        if not items and not self.speaking:
            return  # nothing queued, no reply to end: most beats of a quiet line
        reached_s = now  # where playback is: the end of the chunk that played out last
        while items:
            head = items[0]
            if isinstance(head, str):
                items.popleft()
                self._on_mark(head, reached_s, False)
                continue
            chunk_s, size, audible, ulaw = head
            offset = self._offset
            n = min(size, int((now - chunk_s) * BYTES_PER_S + 1e-6)) - offset
            if n <= 0:
                return
            start_s = chunk_s + offset / BYTES_PER_S
            if audible and not self.speaking:
                self.speaking = True
                self._reply_played = 0
                self._on_speech_started(start_s)
            self._on_played(start_s, n, audible, ulaw, offset)
            self._offset = offset + n
            self._buffered -= n
            self.played_bytes += n
            if self.speaking:
                self._reply_played += n
            if self._offset == size:
                items.popleft()
                self._offset = 0
                reached_s = start_s + n / BYTES_PER_S
        if self.speaking and self._buffered == 0 and now - self._head.end >= self._gap_s:
            self.speaking = False
            self._on_speech_ended(self._head.end, False)

    # ------------------------------------------------------------ hooks

    def _on_played(self, start_s: float, n: int, audible: bool, ulaw: bytes, offset: int) -> None:
        """``n`` bytes from ``offset`` of audio queued as ``ulaw`` started playing at
        ``start_s``."""

    def _on_mark(self, name: str, at_s: float, cleared: bool) -> None:
        """Twilio echoes the mark; ``cleared``: flushed, not reached."""

    def _on_speech_started(self, at_s: float) -> None:
        """The first audible byte of a reply played."""

    def _on_speech_ended(self, at_s: float, cleared: bool) -> None:
        """The reply stopped: dry for the reply gap since ``at_s``, or cleared."""

    def _on_underrun(self, at_s: float, gap_ms: float) -> None:
        """Playback ran dry inside a reply at ``at_s`` for ``gap_ms``."""


class PlaybackBuffer(PlaybackModel):
    """The queue Twilio plays from, one per call, on the call's clock; each input returns
    what happened since the last one, as events."""

    def __init__(self, clock: Clock, *, reply_gap_ms: float = 500.0) -> None:
        super().__init__(reply_gap_ms=reply_gap_ms)
        self._clock = clock
        self._events: list[PlaybackEvent] = []

    @property
    def dry_since_s(self) -> float | None:
        """When playback last ran dry, while it still is; None while audio plays."""
        return self._head.end if self._buffered == 0 and self.played_bytes else None

    def receive_media(self, ulaw: bytes, *, audible: bool) -> list[PlaybackEvent]:
        self.media(self._clock.now(), len(ulaw), audible, ulaw)
        return self._drain()

    def receive_mark(self, name: str) -> list[PlaybackEvent]:
        self.mark(self._clock.now(), name)
        return self._drain()

    def receive_clear(self) -> list[PlaybackEvent]:
        self.clear(self._clock.now())
        return self._drain()

    def advance(self) -> list[PlaybackEvent]:
        """Play everything due by now; return what happened, in order."""
        self.play(self._clock.now())
        return self._drain()

    def _drain(self) -> list[PlaybackEvent]:
        events, self._events = self._events, []
        return events

    def _on_played(self, start_s: float, n: int, audible: bool, ulaw: bytes, offset: int) -> None:
        self._events.append(AudioPlayed(start_s, ulaw[offset : offset + n], audible))

    def _on_mark(self, name: str, at_s: float, cleared: bool) -> None:
        self._events.append(MarkEchoed(name, at_s, cleared))

    def _on_speech_started(self, at_s: float) -> None:
        self._events.append(BotSpeechStarted(at_s))

    def _on_speech_ended(self, at_s: float, cleared: bool) -> None:
        self._events.append(BotSpeechEnded(at_s, cleared))

    def _on_underrun(self, at_s: float, gap_ms: float) -> None:
        self._events.append(Underrun(at_s, gap_ms))
