"""Twilio's outbound playback buffer, modelled so the simulator hears what a caller hears.

How it works: the server may send audio ahead of real time; Twilio queues it and plays
it at 8000 bytes of μ-law per second. A ``mark`` is queued behind the audio sent before
it and is echoed when playback reaches it; ``clear`` drops the queued audio and echoes
every pending mark at once. When the queue runs dry the caller hears nothing: inside a
reply that is an *underrun* (a gap the caller notices).

Audibility is judged per 20 ms slice of a message (``audible_frames``), not per message:
the server sends several frames a message, and a reply whose first frame is silence
starts being heard where its first audible frame plays, not where the message does.

Sans-I/O: the owner feeds what arrives and calls ``advance()`` on its own schedule; time
comes from an injected clock, so tests move it by hand. ``PlaybackModel`` holds the rules
(on ``audio.playhead.PlayHead``) and says what happens through hooks: ``PlaybackBuffer``
turns them into event objects, the load benchmark's ``lean.LeanPlayback`` books them
straight into its metrics.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from callbridge.audio.playhead import PlayHead
from callbridge.clock import Clock

__all__ = [
    "ALL_AUDIBLE",
    "FRAME_BYTES",
    "NONE_AUDIBLE",
    "AudioPlayed",
    "BotSpeechEnded",
    "BotSpeechStarted",
    "MarkEchoed",
    "PlaybackBuffer",
    "PlaybackEvent",
    "PlaybackModel",
    "Queued",
    "Underrun",
    "audible_frames",
    "frame_count",
]

BYTES_PER_S = 8000  # μ-law 8 kHz: one byte per sample
FRAME_BYTES = 160  # one 20 ms frame: the slice audibility is judged on
ALL_AUDIBLE = -1  # an ``audible_frames`` mask with every slice audible
NONE_AUDIBLE = 0


def frame_count(size: int) -> int:
    """20 ms slices in ``size`` bytes; a trailing partial slice counts as one."""
    return -(-size // FRAME_BYTES)


def audible_frames(ulaw: bytes, classify: Callable[[bytes], bool]) -> int:
    """Which 20 ms slices of ``ulaw`` a caller would hear, as a mask: bit ``i`` set when
    ``classify`` says bytes ``160 i`` to ``160 (i + 1)`` are audible. A trailing partial
    slice is judged on its own samples."""
    if len(ulaw) <= FRAME_BYTES:
        return int(bool(ulaw) and classify(ulaw))
    mask = 0
    for i, at in enumerate(range(0, len(ulaw), FRAME_BYTES)):
        if classify(ulaw[at : at + FRAME_BYTES]):
            mask |= 1 << i
    return mask


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


Queued = tuple[float, int, int, bytes]
"""Audio as it arrived: when it starts playing, its size, which slices are audible (an
``audible_frames`` mask), the bytes (empty where the owner keeps only counts)."""


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

    def media(self, now: float, size: int, audible_frames: int, ulaw: bytes = b"") -> None:
        """``size`` bytes arrive; ``audible_frames`` says which 20 ms slices are audible
        (``audible_frames()``; ``ALL_AUDIBLE``, ``NONE_AUDIBLE``)."""
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
        self._items.append((start, size, audible_frames, ulaw))
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
            chunk_s, size, mask, ulaw = head
            offset = self._offset
            end = min(size, int((now - chunk_s) * BYTES_PER_S + 1e-6))
            if end <= offset:
                return
            # The played slices' verdicts: one run when they agree (nearly always).
            first = offset // FRAME_BYTES
            span = (2 << ((end - 1) // FRAME_BYTES - first)) - 1
            bits = (mask >> first) & span
            if bits == 0 or bits == span:
                self._play_run(chunk_s, offset, end, bits != 0, ulaw)
            else:
                self._play_mixed(chunk_s, offset, end, bits, ulaw)
            n = end - offset
            self._offset = end
            self._buffered -= n
            self.played_bytes += n
            if end == size:
                items.popleft()
                self._offset = 0
                reached_s = chunk_s + size / BYTES_PER_S
        if self.speaking and self._buffered == 0 and now - self._head.end >= self._gap_s:
            self.speaking = False
            self._on_speech_ended(self._head.end, False)

    def _play_mixed(self, chunk_s: float, offset: int, end: int, bits: int, ulaw: bytes) -> None:
        """Play ``offset:end`` of a chunk in runs of slices with one verdict; ``bits`` are
        the verdicts from the slice holding ``offset`` on."""
        at = offset
        while at < end:
            audible = bool(bits & 1)
            stop = min(end, (at // FRAME_BYTES + 1) * FRAME_BYTES)
            bits >>= 1
            while stop < end and bool(bits & 1) == audible:
                stop = min(end, stop + FRAME_BYTES)
                bits >>= 1
            self._play_run(chunk_s, at, stop, audible, ulaw)
            at = stop

    def _play_run(self, chunk_s: float, offset: int, end: int, audible: bool, ulaw: bytes) -> None:
        """Bytes ``offset:end`` of the chunk queued at ``chunk_s`` play, all ``audible``
        or not: the first audible byte of a reply is where the caller starts hearing it."""
        start_s = chunk_s + offset / BYTES_PER_S
        if audible and not self.speaking:
            self.speaking = True
            self._reply_played = 0
            self._on_speech_started(start_s)
        self._on_played(start_s, end - offset, audible, ulaw, offset)
        if self.speaking:
            self._reply_played += end - offset

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

    def receive_media(self, ulaw: bytes, *, audible_frames: int) -> list[PlaybackEvent]:
        """``audible_frames``: which 20 ms slices are audible (``audible_frames()``)."""
        self.media(self._clock.now(), len(ulaw), audible_frames, ulaw)
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
