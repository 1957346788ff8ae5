"""The call's state machine: events in, commands out, no I/O (DESIGN.md §3).

One ``CallEngine`` per call. Its shell (``session.py``) feeds it every event from the
call's one inbox together with the clock's time, performs the commands it emits, and
has the process's metronome wake it on the first 20 ms beat at or after
``next_deadline()``. Because the engine owns all call state and never awaits,
there are no races between flags, and each rule is tested with a manual clock.

It is made of parts, each owning its own state:

- ``TurnDetector`` (``turns.py``): frames and transcripts → speech runs, words, the
  silence that ends a turn. Pure facts.
- ``Listening`` (``listening.py``): the rules of the caller's turn (start, endpoint,
  speculative answers, barge-in).
- ``Speaker`` (``speaker.py``): the current reply and its playout; ``barge_in``.
- ``Faults`` (``faults.py``), ``Resumption`` (``resumption.py``), ``Ending``
  (``ending.py``): vendor failures, false interruptions, the ways a call ends.

``handle`` dispatches through ``_TABLE``, a ``(phase, event type) → handler`` table in
the style of h11's ``_state.py``; the phase only ever changes in ``enter``, which checks
it against ``NEXT_PHASES``. A caller frame's way: the metronome's ``Heard`` (a tick's frames,
decoded and scored) → ``Listening.on_heard`` → ``TurnDetector.hear_pcm`` (a
``CallerAudio`` fed by hand: ``on_audio`` → ``hear_frame``, the same facts computed
per frame) → (speech over the bot) ``Listening.consider_barge_in`` →
``Speaker.barge_in`` → ``SendClear`` for the shell to send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from callbridge.engine.config import Script, TurnRules
from callbridge.engine.conversation import Conversation
from callbridge.engine.ending import Ending
from callbridge.engine.events import (
    CallEventKind,
    Command,
    EngineEvent,
    EngineNote,
    HoldAudio,
    HoldDone,
    Phase,
    RecordEvent,
    RecordTurn,
    ReplyAction,
    ReplyAudio,
    ReplyDone,
    ReplyFailed,
    ReplyKind,
    ReplySegment,
    SttDown,
    SttFailed,
    SttUp,
    TransferDone,
    TransferFailed,
    TurnJudged,
    TurnRecord,
)
from callbridge.engine.faults import Faults
from callbridge.engine.listening import Listening
from callbridge.engine.playout import Playout
from callbridge.engine.replies import ReplyStage
from callbridge.engine.resumption import Resumption
from callbridge.engine.speaker import Speaker
from callbridge.engine.speech import SpeechTracker
from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    EndCall,
    Heard,
    MarkPlayed,
    SayText,
)
from callbridge.engine.turns import TurnDetector
from callbridge.providers.base import TranscriptUpdate, VadStream

__all__ = ["NEXT_PHASES", "CallEngine", "Script"]

log = logging.getLogger(__name__)

_P = Phase
NEXT_PHASES: dict[Phase, frozenset[Phase]] = {
    _P.GREETING: frozenset({_P.LISTENING, _P.USER_SPEAKING, _P.THINKING, _P.ENDING, _P.ENDED}),
    _P.LISTENING: frozenset(
        {_P.GREETING, _P.USER_SPEAKING, _P.THINKING, _P.ENDING, _P.ENDED}
    ),
    _P.USER_SPEAKING: frozenset(
        {_P.LISTENING, _P.THINKING, _P.BOT_SPEAKING, _P.ENDING, _P.ENDED}
    ),
    _P.THINKING: frozenset(
        {_P.LISTENING, _P.USER_SPEAKING, _P.BOT_SPEAKING, _P.ENDING, _P.ENDED}
    ),
    _P.BOT_SPEAKING: frozenset({_P.LISTENING, _P.USER_SPEAKING, _P.THINKING, _P.ENDING,
                                _P.ENDED}),
    # A failed transfer talks on (THINKING) or listens again.
    _P.ENDING: frozenset({_P.LISTENING, _P.THINKING, _P.ENDED}),
    _P.ENDED: frozenset(),
}
"""Which phase may follow which; staying in a phase is always allowed."""
# The phases as module globals for the per-wake path: ``Phase.X`` is a lookup on the
# Enum's class, ~0.15 µs each on CPython 3.11 (a global is ~0.02), and ``in`` a set of
# phases hashes the member in Python.
_LISTENING, _USER_SPEAKING, _THINKING = _P.LISTENING, _P.USER_SPEAKING, _P.THINKING
_BOT_SPEAKING, _ENDING, _ENDED = _P.BOT_SPEAKING, _P.ENDING, _P.ENDED
_WRITTEN, _SENT = ReplyStage.WRITTEN, ReplyStage.SENT


class CallEngine:
    """One call's rules, as parts (see the module docstring)."""

    def __init__(
        self,
        turns: TurnRules,
        script: Script,
        *,
        vad: VadStream,
        vad_threshold: float,
        stt_enabled: bool,
        judge_turns: bool = False,
    ) -> None:
        self.turns = turns
        self.script = script
        self.phase = Phase.LISTENING
        self.ended = False  # the phase is ENDED (kept by ``enter``: the shell asks each wake)
        self._handlers = _TABLE[Phase.LISTENING]
        self.conversation = Conversation(script.system_prompt)
        self.barge_ins = 0
        self.stale_interrupts = 0
        self.started_at = 0.0
        self.announcements: list[str] = []  # SayText waiting for the bot's next pause
        self._out: list[Command] = []
        self.turn = TurnDetector(
            turns, vad=vad, vad_threshold=vad_threshold, stt_enabled=stt_enabled,
            judge_turns=judge_turns,
        )
        self.speaker = Speaker(turns, self._out)
        self.listening = Listening(self)
        self.faults = Faults(self)
        self.resumption = Resumption(self)
        self.ending = Ending(self)

    @property
    def playout(self) -> Playout:
        return self.speaker.playout

    @property
    def speech(self) -> SpeechTracker:
        return self.turn.speech

    # ------------------------------------------------------------ shell interface

    def start(self, now: float) -> None:
        self.started_at = now
        if self.script.first_message:
            self.speaker.replies.start(now, ReplyKind.GREETING, text=self.script.first_message)
            self.enter(Phase.GREETING)
        else:
            self.listening.listen(now)

    def take_commands(self) -> list[Command]:
        out = self._out
        if not out:  # most wake-ups ask for nothing
            return []
        taken = out.copy()
        out.clear()  # cleared in place: the parts append to the same list
        return taken

    def next_deadline(self) -> float | None:
        """The earliest deadline a wake-up acts on in this phase (any other would be
        past-due forever and spin the session's loop). Asked after every event of every
        call, so each part is asked only in the phases where it can have one
        (``Ending.hangup_deadline``: ENDING; ``Faults.hold_deadline``: USER_SPEAKING,
        THINKING, BOT_SPEAKING) and nothing is allocated. tests/engine hold it, after
        every event, to the plain minimum over every part's deadline."""
        phase = self.phase
        if phase is _ENDED:
            return None
        listening = self.listening
        at = None if phase is _ENDING else self.started_at + self.turns.max_duration_s
        if phase is _LISTENING:
            candidate = listening.idle_at
            if candidate is not None and (at is None or candidate < at):
                at = candidate
        candidate = listening.await_final_until
        if candidate is not None and (at is None or candidate < at):
            at = candidate
        if phase is _ENDING:
            candidate = self.ending.hangup_deadline()
            if candidate is not None and (at is None or candidate < at):
                at = candidate
        candidate = self.ending.deadline
        if candidate is not None and (at is None or candidate < at):
            at = candidate
        speaker = self.speaker
        playout_at = speaker.playout.next_deadline()
        # BOT_SPEAKING: a hold is due only once the reply has nothing left to send
        # (``Faults.hold_deadline``), so while it talks the hold is not asked for.
        if (
            phase is _USER_SPEAKING
            or phase is _THINKING
            or (phase is _BOT_SPEAKING and playout_at is None)
        ):
            candidate = self.faults.hold_deadline()
            if candidate is not None and (at is None or candidate < at):
                at = candidate
            if phase is _USER_SPEAKING:
                candidate = self.resumption.deadline()
                if candidate is not None and (at is None or candidate < at):
                    at = candidate
        reply = speaker.replies.current
        if (
            playout_at is not None
            and (reply is None or not reply.held)  # a held answer is not played yet
            and (at is None or playout_at < at)
        ):
            at = playout_at
        return at

    def handle(self, event: EngineEvent, now: float) -> None:
        if self.phase is _ENDED:
            return
        if type(event) is Heard:  # every call's every beat: ``_heard`` without the table
            if event.ulaw:
                self.listening.on_heard(event, now)
        else:
            handler = self._handlers.get(type(event))
            if handler is not None:
                handler(self, event, now)
        # Anything else: an event of a cancelled reply: it is gone, its audio must not
        # play. An empty ``Heard`` (a beat) only advances time.
        self._pump(now)

    # ------------------------------------------------------------ after every event

    def _pump(self, now: float) -> None:
        if self.phase is _ENDED:
            return
        speaker = self.speaker
        reply = speaker.replies.current
        if reply is None or not reply.held:  # a held answer is not played yet
            speaker.pull(now)
            if reply is not None:
                stage = reply.stage  # ``reply.done`` inline: only a finished one completes
                if stage is _WRITTEN or stage is _SENT:
                    self.ending.check_reply_complete(now)
        # Each part's deadline that has come; checked cheaply first (inline: every frame).
        phase = self.phase
        if phase is _ENDED:
            return
        ending, listening = self.ending, self.listening
        if phase is not _ENDING and now >= self.started_at + self.turns.max_duration_s:
            ending.max_duration(now)
            return
        if ending.deadline is not None and ending.check_deadlines(now):
            return
        final_at = listening.await_final_until
        if final_at is not None and now >= final_at:
            listening.final_timeout(now)
            return
        if (
            phase is _USER_SPEAKING
            or phase is _THINKING
            or (phase is _BOT_SPEAKING and self.speaker.playout.next_deadline() is None)
        ):  # (no hold is due in any other phase, nor while the reply has audio to send)
            self.faults.check_hold(now)
        if self.resumption.pending is not None:
            self.resumption.check(now)
        if listening.idle_at is not None and now >= listening.idle_at:
            listening.check_idle(now)

    # ------------------------------------------------------------ for the parts

    def enter(self, phase: Phase) -> None:
        """The one place the phase changes."""
        if phase is not self.phase and phase not in NEXT_PHASES[self.phase]:
            raise RuntimeError(f"no transition {self.phase.value} → {phase.value}")
        self.phase = phase
        self.ended = phase is _ENDED
        self._handlers = _TABLE[phase]

    def send(self, command: Command) -> None:
        self._out.append(command)

    def record(self, turn: TurnRecord) -> None:
        self._out.append(RecordTurn(turn))

    def note(
        self, kind: CallEventKind, level: int = logging.INFO, **data: str | int | float
    ) -> None:
        """Log it and hand it to the call's record, typed (never parsed back from logs)."""
        if log.isEnabledFor(level):
            log.log(level, "%s %s", kind, " ".join(f"{k}={v}" for k, v in data.items()))
        self._out.append(RecordEvent(EngineNote(kind, data)))


# ---------------------------------------------------------------- the transition table

Handler = Callable[[CallEngine, Any, float], None]


def _audio(e: CallEngine, event: CallerAudio, now: float) -> None:
    e.listening.on_audio(event.ulaw, event.timestamp_ms, now)


def _heard(e: CallEngine, event: Heard, now: float) -> None:
    if event.ulaw:
        e.listening.on_heard(event, now)


def _transcript(e: CallEngine, event: TranscriptUpdate, now: float) -> None:
    e.listening.on_transcript(event, now)


def _dtmf(e: CallEngine, event: CallerDtmf, now: float) -> None:
    e.listening.on_dtmf(event.digit, now)


def _mark(e: CallEngine, event: MarkPlayed, now: float) -> None:
    e.playout.mark_played(event.name, now)


def _say(e: CallEngine, event: SayText, now: float) -> None:
    e.announcements.append(event.text)
    if e.phase is Phase.LISTENING:
        e.listening.listen(now)


def _of_current_reply(handler: Handler) -> Handler:
    """Reply events count only for the current reply (a cancelled one's are dropped)."""

    def checked(e: CallEngine, event: Any, now: float) -> None:
        if e.speaker.replies.is_current(event.reply_id):
            handler(e, event, now)

    return checked


def _reply_segment(e: CallEngine, event: ReplySegment, now: float) -> None:
    e.speaker.replies.on_segment(event.index, event.text, now)


def _reply_audio(e: CallEngine, event: ReplyAudio, now: float) -> None:
    if e.phase is Phase.THINKING:
        e.enter(Phase.BOT_SPEAKING)
    e.speaker.replies.on_audio(event.index, event.ulaw, now)


def _reply_action(e: CallEngine, event: ReplyAction, now: float) -> None:
    e.speaker.replies.on_action(event.call.name, event.call.arguments)


def _reply_done(e: CallEngine, event: ReplyDone, now: float) -> None:
    e.speaker.replies.on_done()


def _reply_failed(e: CallEngine, event: ReplyFailed, now: float) -> None:
    e.ending.on_reply_failed(event.error, event.provider, now)


def _ignore(e: CallEngine, event: object, now: float) -> None:
    pass


_ANY_PHASE: dict[type, Handler] = {
    CallerAudio: _audio,
    Heard: _heard,
    TranscriptUpdate: _transcript,
    CallerDtmf: _dtmf,
    MarkPlayed: _mark,
    ReplySegment: _of_current_reply(_reply_segment),
    ReplyAudio: _of_current_reply(_reply_audio),
    ReplyAction: _of_current_reply(_reply_action),
    ReplyDone: _of_current_reply(_reply_done),
    ReplyFailed: _of_current_reply(_reply_failed),
    CallerHungUp: lambda e, ev, now: e.ending.on_hung_up(ev.reason, now),
    EndCall: lambda e, ev, now: e.ending.on_end_requested(ev.reason, ev.message, now),
    SayText: _say,
    SttDown: lambda e, ev, now: e.faults.on_stt_down(ev.provider, ev.error, now),
    SttUp: lambda e, ev, now: e.faults.on_stt_up(ev.provider, ev.resent_ms, now),
    SttFailed: lambda e, ev, now: e.faults.on_stt_failed(ev.provider, ev.error, now),
    HoldAudio: lambda e, ev, now: e.faults.on_hold_audio(ev.hold_id, ev.ulaw),
    HoldDone: lambda e, ev, now: e.faults.on_hold_done(ev.hold_id, now),
    TransferDone: lambda e, ev, now: e.faults.on_transfer_done(),
    TransferFailed: lambda e, ev, now: e.faults.on_transfer_failed(ev.error, now),
    TurnJudged: lambda e, ev, now: e.turn.on_verdict(ev.run_id, ev.finished_probability),
}
_IN_PHASE: dict[tuple[Phase, type], Handler] = {
    (Phase.ENDING, CallerDtmf): _ignore,  # the goodbye is said regardless
    (Phase.ENDING, EndCall): _ignore,  # already ending
}
_TABLE: dict[Phase, dict[type, Handler]] = {
    phase: {
        kind: _IN_PHASE.get((phase, kind), handler) for kind, handler in _ANY_PHASE.items()
    }
    if phase is not Phase.ENDED
    else {}
    for phase in Phase
}
"""``phase → event type → handler``; an event with no entry only advances time."""
