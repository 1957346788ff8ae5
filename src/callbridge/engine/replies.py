"""What the bot is saying right now: the one current reply, its segments, its actions
and its latency marks. Events of any other reply id belong to a cancelled reply and are
ignored, which is what keeps a barge-in from leaking stale audio."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from enum import Enum

from callbridge.engine.events import CancelReply, Command, ReplyKind, StartReply, TurnRecord
from callbridge.engine.playout import Playout
from callbridge.providers.base import Message

__all__ = ["Replies", "Reply", "ReplyStage"]

log = logging.getLogger(__name__)


class ReplyStage(Enum):
    """A reply's life, in order; it ends when it is heard in full or cancelled (then it
    is no longer ``Replies.current``)."""

    WAITING = "waiting"  # started, no audio yet: the caller hears silence
    SPEAKING = "speaking"  # its audio is arriving and being paced out
    WRITTEN = "written"  # its task is done: every sentence's audio is in the playout
    SENT = "sent"  # all of it went to the line; the marks will say when it was heard


# Module globals for what is asked on every wake or audio chunk (``Reply.done``): an
# Enum member's class lookup costs ~0.15 µs on CPython 3.11.
_WAITING, _SPEAKING = ReplyStage.WAITING, ReplyStage.SPEAKING
_WRITTEN, _SENT = ReplyStage.WRITTEN, ReplyStage.SENT


@dataclass(slots=True)
class Reply:
    id: int
    kind: ReplyKind
    started_at: float
    stage: ReplyStage = ReplyStage.WAITING
    held: bool = False  # speculative: started before the endpoint, not to be played yet
    segments: int = 0
    # What to do once it has been heard (the model's actions).
    hangup_after: bool = False
    transfer_to: str | None = None
    # When each stage began, for the latency marks and the hang-up deadline.
    first_audio_at: float | None = None
    first_segment_at: float | None = None  # the model's first speakable sentence
    first_sent_at: float | None = None
    all_sent_at: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    # The turn's hops as clock times (``speech_end``, ``endpoint``, ``llm_sent`` …), for
    # the record only: the engine and the reply's task each add theirs (``hops_ms``).
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """Its task has finished: nothing more of it will arrive (asked on every wake)."""
        stage = self.stage
        return stage is _WRITTEN or stage is _SENT

    def all_sent(self, now: float) -> None:
        if self.stage is not ReplyStage.SENT:
            self.stage, self.all_sent_at = ReplyStage.SENT, now

    def record(self, text: str, heard: str, now: float, *, interrupted: bool = False) -> TurnRecord:
        """This reply as a finished assistant turn: what it said and what was heard."""
        return TurnRecord(
            role="assistant",
            text=text,
            heard_text=heard,
            interrupted=interrupted,
            started_at=self.started_at,
            ended_at=now,
            kind=self.kind.value,
            latency_ms={**self.latency_ms, **self.hops_ms()},
        )

    def hops_ms(self) -> dict[str, float]:
        """Each mark as ``hop_<name>``: ms after the caller's speech end as the VAD dated
        it (none without that anchor: fixed text, a DTMF turn)."""
        marks = self.marks
        origin = marks.get("speech_end")
        if origin is None:
            return {}
        stamps = {
            **marks,
            "first_segment": self.first_segment_at,
            "first_audio": self.first_audio_at,
            "first_frame": self.first_sent_at,
        }
        return {
            f"hop_{name}": (at - origin) * 1000
            for name, at in stamps.items()
            if at is not None and name != "speech_end"
        }


class Replies:
    def __init__(self, playout: Playout, out: list[Command]) -> None:
        self.current: Reply | None = None
        self._playout = playout
        self._out = out
        self._next_id = 0

    def start(
        self,
        now: float,
        kind: ReplyKind,
        *,
        text: str | None = None,
        messages: tuple[Message, ...] = (),
    ) -> Reply:
        self._next_id += 1
        reply = Reply(id=self._next_id, kind=kind, started_at=now)
        self.current = reply
        self._out.append(
            StartReply(reply.id, kind, messages=messages, text=text, marks=reply.marks)
        )
        return reply

    def is_current(self, reply_id: int) -> bool:
        return self.current is not None and self.current.id == reply_id

    def cancel(self) -> None:
        if self.current is not None:
            self._out.append(CancelReply(self.current.id))
            self.current = None

    def on_segment(self, index: int, text: str, now: float) -> None:
        reply = self._require()
        if reply.first_segment_at is None:
            reply.first_segment_at = now
            reply.latency_ms["first_sentence"] = (now - reply.started_at) * 1000
        if index > 0:
            self._playout.end_segment((reply.id, index - 1), more_follows=True)
        self._playout.begin_segment((reply.id, index), text)
        reply.segments = index + 1

    def on_audio(self, index: int, data: bytes, now: float) -> None:
        reply = self._require()
        if reply.stage is _WAITING:
            reply.stage, reply.first_audio_at = _SPEAKING, now
            reply.latency_ms["first_audio"] = (now - reply.started_at) * 1000
        self._playout.add_audio((reply.id, index), data)

    def on_action(self, name: str, arguments: str) -> None:
        reply = self._require()
        if name == "end_call":
            reply.hangup_after = True
        elif name == "transfer_call":
            try:
                target = json.loads(arguments or "{}").get("to")
            except (ValueError, AttributeError):
                target = None
            if isinstance(target, str) and target:
                reply.transfer_to = target
            else:
                log.warning("reply.transfer_without_number arguments=%r", arguments)
        else:
            log.warning("reply.unknown_action name=%s", name)

    def on_done(self) -> None:
        reply = self._require()
        self._end_open_segment(reply)
        reply.stage = ReplyStage.WRITTEN

    def on_failed(self) -> None:
        """Let what was already said play out; the reply itself is over."""
        self._end_open_segment(self._require())
        self.current = None

    def note_sent(self, now: float) -> None:
        reply = self.current
        if reply is not None and reply.first_sent_at is None and reply.first_audio_at:
            reply.first_sent_at = now
            reply.latency_ms["first_frame"] = (now - reply.started_at) * 1000

    def _end_open_segment(self, reply: Reply) -> None:
        if reply.segments:
            self._playout.end_segment((reply.id, reply.segments - 1))

    def _require(self) -> Reply:
        assert self.current is not None, "reply events are only handled for the current reply"
        return self.current
