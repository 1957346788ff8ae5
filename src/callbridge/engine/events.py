"""What flows through a call's one inbox, and what the engine asks its shell to do.

Inputs are facts (``ReplyAudio``, ``MarkPlayed``); commands are requests
(``SendClear``, ``StartReply``). The engine core turns the first into the second and
never performs I/O itself, so its rules are tested with plain data and a manual clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from callbridge.call_events import CallEvent, EngineNote
from callbridge.call_events import EngineNoteKind as CallEventKind  # the engine's name
from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    EndCall,
    Heard,
    MarkPlayed,
    SayText,
)
from callbridge.providers.base import (
    Message,
    SttSpeechStarted,
    SttUtteranceEnd,
    ToolCall,
    TranscriptUpdate,
)

__all__ = [
    "SPEAKING_PHASES",
    "CallEvent",
    "CallEventKind",
    "CancelReply",
    "Command",
    "EngineEvent",
    "EngineNote",
    "FinalizeStt",
    "Hangup",
    "HoldAudio",
    "HoldDone",
    "JudgeTurn",
    "Phase",
    "RecordEvent",
    "RecordTurn",
    "ReplyAction",
    "ReplyAudio",
    "ReplyDone",
    "ReplyFailed",
    "ReplyKind",
    "ReplySegment",
    "SendAudio",
    "SendClear",
    "SendMark",
    "SpeakHold",
    "StartReply",
    "SttDown",
    "SttFailed",
    "SttUp",
    "Transfer",
    "TransferDone",
    "TransferFailed",
    "TurnJudged",
    "TurnRecord",
    "WarmUp",
]


class Phase(Enum):
    GREETING = "greeting"
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    BOT_SPEAKING = "bot_speaking"
    ENDING = "ending"
    ENDED = "ended"


SPEAKING_PHASES = frozenset({Phase.GREETING, Phase.BOT_SPEAKING})
"""The bot is talking: caller speech here is judged as a barge-in."""


class ReplyKind(Enum):
    GREETING = "greeting"
    ANSWER = "answer"
    REPROMPT = "reprompt"
    GOODBYE = "goodbye"
    APOLOGY = "apology"
    ANNOUNCEMENT = "announcement"
    RESUMPTION = "resumption"  # the rest of a reply a false interruption stopped


# ---------------------------------------------------------------- inputs from the reply task


@dataclass(frozen=True, slots=True)
class ReplySegment:
    """A speakable piece of the reply (sentence or clause) was handed to TTS."""

    reply_id: int
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ReplyAudio:
    reply_id: int
    index: int
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class ReplyAction:
    """The model asked for a built-in action (``end_call``, ``transfer_call``)."""

    reply_id: int
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ReplyDone:
    reply_id: int


@dataclass(frozen=True, slots=True)
class ReplyFailed:
    reply_id: int
    error: str
    provider: str = ""  # the vendor that failed, when a provider did


# ---------------------------------------------------------------- inputs about faults


@dataclass(frozen=True, slots=True)
class SttDown:
    """The transcriber's stream dropped mid-call; it is being reconnected."""

    provider: str
    error: str


@dataclass(frozen=True, slots=True)
class SttUp:
    """The transcriber is back; ``resent_ms`` of unfinalised caller audio went again."""

    provider: str
    resent_ms: int


@dataclass(frozen=True, slots=True)
class SttFailed:
    """The transcriber could not be (re)opened within the retry policy: the call ends."""

    provider: str
    error: str


@dataclass(frozen=True, slots=True)
class HoldAudio:
    """Audio of the "one moment" line the shell is synthesising (fallback TTS)."""

    hold_id: int
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class HoldDone:
    hold_id: int


@dataclass(frozen=True, slots=True)
class TransferDone:
    """The line accepted the transfer: the caller is on the other number."""


@dataclass(frozen=True, slots=True)
class TransferFailed:
    error: str


@dataclass(frozen=True, slots=True)
class TurnJudged:
    """The end-of-turn model's verdict on the silence after speech run ``run_id``."""

    run_id: int
    finished_probability: float


EngineEvent = (
    CallerAudio
    | CallerDtmf
    | MarkPlayed
    | CallerHungUp
    | EndCall
    | SayText
    | TranscriptUpdate
    | SttSpeechStarted
    | SttUtteranceEnd
    | ReplySegment
    | ReplyAudio
    | ReplyAction
    | ReplyDone
    | ReplyFailed
    | SttDown
    | SttUp
    | SttFailed
    | HoldAudio
    | HoldDone
    | TransferDone
    | TransferFailed
    | Heard
    | TurnJudged
)


# ---------------------------------------------------------------- commands to the shell


class SendAudio(NamedTuple):
    """A frame (or more) of the bot's voice for the line. Immutable like every command,
    but a ``NamedTuple``: one is made per 20 ms of every talking call, and a frozen
    dataclass's ``__init__`` costs ~0.7 µs more."""

    ulaw: bytes


@dataclass(frozen=True, slots=True)
class SendMark:
    name: str


@dataclass(frozen=True, slots=True)
class SendClear:
    pass


@dataclass(frozen=True, slots=True)
class StartReply:
    """Run the reply pipeline: ``text`` is fixed speech; otherwise ask the model."""

    reply_id: int
    kind: ReplyKind
    messages: tuple[Message, ...] = ()
    text: str | None = None
    # The reply's hop marks (``Reply.marks``): the task stamps its own into it (the
    # model asked, its first token, TTS asked, TTS's first audio). Instrumentation only.
    marks: dict[str, float] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SpeakHold:
    """Say the short "one moment" line with the fallback TTS: the caller has waited in
    silence long enough while a provider is being retried."""

    hold_id: int
    text: str


@dataclass(frozen=True, slots=True)
class CancelReply:
    reply_id: int


@dataclass(frozen=True, slots=True)
class FinalizeStt:
    pass


@dataclass(frozen=True, slots=True)
class WarmUp:
    """The caller started a turn: have a kept-alive connection to the model ready for
    the answer (one opens now, while they talk, if every one is busy)."""


@dataclass(frozen=True, slots=True)
class JudgeTurn:
    """Ask the end-of-turn model whether the caller sounds finished (the silence of
    speech run ``run_id`` just began); ``pcm16`` is the turn's last ≤ 8 s, 8 kHz."""

    run_id: int
    pcm16: bytes


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str


@dataclass(frozen=True, slots=True)
class Transfer:
    to: str


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One finished turn, for logs, metrics and the store. Times are clock seconds."""

    role: str
    text: str
    heard_text: str | None = None
    interrupted: bool = False
    started_at: float = 0.0
    ended_at: float = 0.0
    kind: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordTurn:
    turn: TurnRecord


@dataclass(frozen=True, slots=True)
class RecordEvent:
    """Hand ``event`` to the call's ``emit`` (``call_events.py``: the record, the metrics)."""

    event: EngineNote


Command = (
    SendAudio
    | SendMark
    | SendClear
    | StartReply
    | SpeakHold
    | CancelReply
    | FinalizeStt
    | JudgeTurn
    | WarmUp
    | Hangup
    | Transfer
    | RecordTurn
    | RecordEvent
)
