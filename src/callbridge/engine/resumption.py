"""False interruptions: the bot stopped for a cough, a door or an "okay", and goes on.

Barge-in is decided before the caller's words are known (the VAD is faster than any
transcriber), so some interruptions turn out to carry no words. When a barge-in is
followed by no words, or only a backchannel, within ``falseInterruptionMs``, the reply
goes on from the first word the caller did not hear (the marks say which), after
``resumeMessage`` if one is set. Words that do come cancel it: the caller has the turn.
Without a transcriber no words ever come, so there nothing resumes (VAD-only callers
keep plain barge-in).

``Resumption`` is a part of ``CallEngine`` (``core.py``) and owns only the pending
resumption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from callbridge.engine.events import Phase, ReplyKind, TurnRecord

if TYPE_CHECKING:
    from callbridge.engine.core import CallEngine

__all__ = ["Pending", "Resumption"]

_RECHECK_S = 0.1  # the caller is still making a sound at the deadline: look again


@dataclass(frozen=True, slots=True)
class Pending:
    rest: str  # the reply's words the caller did not hear
    from_word: int  # index of the first of them in the reply
    deadline: float
    heard_before: str  # the turn's words at the barge-in (not this interruption's)


class Resumption:
    def __init__(self, engine: CallEngine) -> None:
        self.e = engine
        self.pending: Pending | None = None

    def arm(self, now: float, spoken: str, heard: str) -> None:
        """Called by the barge-in (speech only): remember what the caller did not hear."""
        e = self.e
        self.pending = None
        if not e.turn.stt or e.faults.stt_down or e.turns.false_interruption_ms == 0:
            return
        words = spoken.split()
        at = len(heard.split())
        if at >= len(words):
            return  # they heard it all: nothing to go on with
        self.pending = Pending(
            rest=" ".join(words[at:]),
            from_word=at,
            deadline=now + e.turns.false_interruption_ms / 1000,
            heard_before=e.turn.words.text(),
        )

    def deadline(self) -> float | None:
        pending = self.pending
        return pending.deadline if pending is not None else None

    def new_words(self) -> str:
        pending = self.pending
        heard = self.e.turn.words.heard()
        if pending is not None and pending.heard_before and heard.startswith(pending.heard_before):
            heard = heard[len(pending.heard_before) :]
        return heard.strip()

    def check(self, now: float) -> None:
        """At the deadline: words mean a real interruption, none (or "okay") a false one."""
        e = self.e
        pending = self.pending
        if pending is None or now < pending.deadline:
            return
        if e.phase is not Phase.USER_SPEAKING or e.faults.stt_down:
            self.pending = None
            return
        words = self.new_words()
        if words and not e.turn.backchannels.judge(words):
            self.cancel("caller_spoke")
            return
        if e.turn.speech.run_ms > 0:
            # Still a sound and no words yet: wait for its end (or its words).
            self.pending = Pending(
                pending.rest, pending.from_word, now + _RECHECK_S, pending.heard_before
            )
            return
        self._resume(now, words)

    def resumes_instead(self, text: str, now: float) -> bool:
        """The interrupting turn ended with no words, or only a backchannel: go on."""
        if self.pending is None:
            return False
        words = text.strip()
        if words and not self.e.turn.backchannels.judge(words):
            self.cancel("caller_spoke")
            return False
        self._resume(now, words)
        return True

    def cancel(self, reason: str) -> None:
        if self.pending is not None:
            self.pending = None
            self.e.note("resume_cancelled", reason=reason)

    def _resume(self, now: float, backchannel: str) -> None:
        e = self.e
        pending = self.pending
        assert pending is not None
        self.pending = None
        final = not e.turn.words.unfinished()  # else its final is recorded when it comes
        e.turn.words.take()  # what there was is on record below, not a turn to answer
        e.listening.endpoint_at = None
        e.listening.await_final_until = None
        e.note("false_interruption", words=len(backchannel.split()), backchannel=backchannel)
        if backchannel and final:
            self.record_backchannel(backchannel, now)
        prefix = (e.turns.resume_message or "").strip()
        text = f"{prefix} {pending.rest}".strip()
        e.speaker.replies.start(now, ReplyKind.RESUMPTION, text=text)
        e.enter(Phase.THINKING)
        e.note("resumed", from_word=pending.from_word, words=len(pending.rest.split()))

    def record_backchannel(self, text: str, now: float) -> None:
        """Kept in the transcript, marked, and not answered (not in the model's context)."""
        self.e.note("backchannel", text=text)
        self.e.record(TurnRecord("user", text, started_at=now, ended_at=now, kind="backchannel"))
