"""Bridge mode: a remote voice agent (VAPI) serves the call instead of our pipeline.

How it works: the caller's frames go to the agent as they come (on the process's 20 ms
metronome, a tick's frames at once: ``Heard``); the agent's audio comes
back in chunks of any size and is paced to the line by the same ``Playout`` the pipeline
uses (20 ms frames, bounded lead, a mark after each stretch of speech). ``BridgeCore``
holds every rule and does no I/O: it takes events with the time and returns commands, so
a manual clock tests it. Its shell, ``BridgeCall``, is in ``bridge_call.py``.

Barge-in happens in one place (``BridgeCore._barge_in``, through the engine's one
``speaker.barge_in``): ``clear`` to the line, drop the queued playout, and hold back
agent audio that was already on its way (until the agent says it starts speaking again,
or ``stale_guard_ms`` passes). When the agent ends the call the line is hung up after
the last mark comes back (so the goodbye is heard), or after ``hangup_mark_timeout_s``;
when the caller hangs up the agent's call is ended. When the agent is lost (unreachable,
or its socket drops mid-call) the caller hears what was already queued, then the apology
in the local voice, then the REST hang-up, and the record says which provider failed and
why (DESIGN.md §3: every fault is heard).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from callbridge.engine.events import (
    EngineNote,
    Hangup,
    RecordEvent,
    SendAudio,
    SendClear,
    SendMark,
)
from callbridge.engine.playout import Playout, SegmentKey
from callbridge.engine.speaker import barge_in
from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    Heard,
    LineEvent,
    MarkPlayed,
)
from callbridge.providers.base import RemoteSignal

__all__ = [
    "Apologise",
    "ApologyAudio",
    "ApologyDone",
    "BridgeCore",
    "BridgeOptions",
    "EndRemote",
    "ForwardAudio",
    "RemoteAudio",
    "RemoteFailed",
    "RemoteSignalled",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- events and commands


@dataclass(frozen=True, slots=True)
class RemoteAudio:
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class RemoteSignalled:
    signal: RemoteSignal


@dataclass(frozen=True, slots=True)
class RemoteFailed:
    """The agent was lost: it could not be reached, or its call broke mid-way."""

    error: str
    provider: str = ""


@dataclass(frozen=True, slots=True)
class ApologyAudio:
    """A chunk of the apology, in the local fallback voice."""

    ulaw: bytes


@dataclass(frozen=True, slots=True)
class ApologyDone:
    """The apology is fully synthesised (or could not be)."""


@dataclass(frozen=True, slots=True)
class ForwardAudio:
    """Send a caller frame to the agent."""

    ulaw: bytes


@dataclass(frozen=True, slots=True)
class EndRemote:
    """End the agent's call (the caller left)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Apologise:
    """Speak the apology with the local voice, as ``ApologyAudio`` then ``ApologyDone``."""


BridgeEvent = (
    LineEvent | RemoteAudio | RemoteSignalled | RemoteFailed | ApologyAudio | ApologyDone | Heard
)
BridgeCommand = (
    SendAudio | SendMark | SendClear | Hangup | ForwardAudio | EndRemote | Apologise | RecordEvent
)


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    send_ahead_ms: int = 200
    playout_max_s: float = 120.0
    hangup_mark_timeout_s: float = 10.0
    clear_on_user_speech: bool = True
    """Caller speech over the bot clears at once, before the agent's own verdict."""
    stale_guard_ms: int = 300
    """After a clear, agent audio is dropped this long unless it says it speaks anew."""
    segment_idle_ms: int = 200
    """A gap in the agent's audio this long closes the stretch of speech with a mark."""
    apology_grace_s: float = 15.0
    """Longest the apology may take to synthesise before the line is hung up regardless."""


class _Phase(Enum):
    ACTIVE = "active"
    APOLOGISING = "apologising"  # the agent is lost; the apology is being synthesised
    DRAINING = "draining"  # the agent ended; the line plays out what it has
    ENDED = "ended"


class BridgeCore:
    """The rules of one bridged call, without I/O: ``handle`` events, ``take_commands``."""

    def __init__(self, options: BridgeOptions | None = None) -> None:
        self.options = options = options or BridgeOptions()
        self.playout = Playout(
            send_ahead_ms=options.send_ahead_ms, max_queued_s=options.playout_max_s
        )
        self.phase = _Phase.ACTIVE
        self.end_reason = ""
        self.failure: str | None = None  # why the agent was lost, for the record
        self.clears = 0
        self.stale_dropped_bytes = 0
        self._out: list[BridgeCommand] = []
        self._segment: SegmentKey | None = None
        self._segments = 0
        self._last_audio = 0.0
        self._guard_until: float | None = None
        self._drain_deadline: float | None = None

    @property
    def ended(self) -> bool:
        return self.phase is _Phase.ENDED

    @property
    def bot_speaking(self) -> bool:
        """Agent audio queued here, or sent and not yet confirmed played by the line."""
        return self.playout.busy()

    def take_commands(self) -> list[BridgeCommand]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        """When ``handle(Heard())`` has something to do (None: only events matter)."""
        if self.ended:
            return None
        times = [self.playout.next_deadline(), self._drain_deadline]
        if self._segment is not None:
            times.append(self._last_audio + self.options.segment_idle_ms / 1000)
        return min((t for t in times if t is not None), default=None)

    def handle(self, event: BridgeEvent, now: float) -> None:
        if self.ended:
            return
        match event:
            case Heard(ulaw=frames):  # the metronome's beat: the tick's frames, or none
                if self.phase is _Phase.ACTIVE:
                    self._out.extend(ForwardAudio(frame) for frame in frames)
            case CallerAudio(ulaw=data):
                if self.phase is _Phase.ACTIVE:
                    self._out.append(ForwardAudio(data))
            case MarkPlayed(name=name):
                self.playout.mark_played(name, now)
                if self._segment is None and not self.playout.busy():
                    self.playout.finish_utterance()
            case CallerHungUp(reason=reason):
                self._finish(EndRemote(f"caller {reason}"))
                return
            case RemoteAudio() | RemoteSignalled() if self.phase is _Phase.APOLOGISING:
                pass  # a lost agent's leftovers must not cut into the apology
            case RemoteAudio(ulaw=data):
                self._remote_audio(data, now)
            case RemoteSignalled(signal=signal):
                self._signal(signal, now)
            case RemoteFailed(error=error, provider=provider):
                self._lost(error, provider, now)
            case ApologyAudio(ulaw=data) if self.phase is _Phase.APOLOGISING:
                self._remote_audio(data, now)
            case ApologyDone() if self.phase is _Phase.APOLOGISING:
                self._drain("apology", now)
            case ApologyAudio() | ApologyDone():
                pass
            case CallerDtmf():
                pass  # the agent's socket carries no keypad
        self._advance(now)

    # ------------------------------------------------------------ rules

    def _remote_audio(self, data: bytes, now: float) -> None:
        if self._guard_until is not None:
            if now < self._guard_until:
                self.stale_dropped_bytes += len(data)
                return
            self._guard_until = None
        if self._segment is None:
            self._segments += 1
            self._segment = (self._segments, 0)
            self.playout.begin_segment(self._segment, "")
        self.playout.add_audio(self._segment, data)
        self._last_audio = now

    def _signal(self, signal: RemoteSignal, now: float) -> None:
        match signal:
            case "interrupted":
                self._barge_in(now)
            case "user-started":
                if self.options.clear_on_user_speech and self.bot_speaking:
                    self._barge_in(now)
            case "bot-started":
                self._guard_until = None  # what follows is new speech, not stale audio
            case "bot-stopped":
                self._close_segment()
            case "ended":
                self._drain("agent ended the call", now)

    def _barge_in(self, now: float) -> None:
        """The one place a barge-in happens. Repeats (``user-started`` then
        ``interrupted``) find nothing left to clear and send nothing."""
        self._guard_until = now + self.options.stale_guard_ms / 1000
        if not self.playout.busy():
            return
        barge_in(self.playout, self._out.append, now, clear=True)
        self._segment = None
        self.clears += 1

    def _lost(self, error: str, provider: str, now: float) -> None:
        """The agent is gone: what is queued plays, then the apology, then the hang-up."""
        if self.phase is not _Phase.ACTIVE:
            return
        self.failure = error
        self.end_reason = f"agent failed: {error}"
        self._out.append(RecordEvent(EngineNote(
            "provider_failed", {"stage": "bridge", "provider": provider or "agent", "error": error}
        )))
        self._close_segment()
        self._guard_until = None
        self.phase = _Phase.APOLOGISING
        self._drain_deadline = now + self.options.apology_grace_s
        self._out.append(Apologise())

    def _drain(self, reason: str, now: float) -> None:
        if self.phase not in (_Phase.ACTIVE, _Phase.APOLOGISING):
            return
        self.end_reason = reason
        self._close_segment()
        self.phase = _Phase.DRAINING
        self._drain_deadline = now + self.options.hangup_mark_timeout_s

    def _close_segment(self) -> None:
        if self._segment is not None:
            self.playout.end_segment(self._segment)
            self._segment = None

    def _advance(self, now: float) -> None:
        idle_s = self.options.segment_idle_ms / 1000
        if self._segment is not None and now - self._last_audio >= idle_s - 1e-9:
            self._close_segment()
        for command in self.playout.pull(now):
            assert isinstance(command, SendAudio | SendMark)  # all the pacer ever asks
            self._out.append(command)
        if self.phase is _Phase.APOLOGISING:
            if self._drain_deadline is not None and now >= self._drain_deadline:
                log.warning("bridge.apology_timeout")
                self._finish(Hangup(self.end_reason))
        elif self.phase is _Phase.DRAINING:
            if not self.playout.busy():
                self._finish(Hangup(self.end_reason))
            elif self._drain_deadline is not None and now >= self._drain_deadline:
                log.warning("bridge.hangup_mark_timeout")
                self._finish(Hangup(f"{self.end_reason} (marks timed out)"))

    def _finish(self, command: Hangup | EndRemote) -> None:
        if isinstance(command, Hangup):
            self._out.append(RecordEvent(EngineNote("hangup", {"reason": command.reason})))
        self._out.append(command)
        self.phase = _Phase.ENDED
