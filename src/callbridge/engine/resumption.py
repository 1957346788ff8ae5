"""False interruptions: the bot stopped for a cough, a door or an "okay", and goes on.

Barge-in is decided before the caller's words are known (the VAD is faster than any
transcriber), so some interruptions turn out to carry no words. When a barge-in is
followed by no words, or only a backchannel, within ``falseInterruptionMs``, the reply
goes on from the first word the caller did not hear (the marks say which), after
``resumeMessage`` if one is set. Words that do come cancel it: the caller has the turn.
Without a transcriber no words ever come, so there nothing resumes (VAD-only callers
keep plain barge-in).

``Resumption`` is a part of ``CallEngine`` (a mixin) like ``Listening``.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.assistant import TurnTaking
from callbridge.engine.backchannel import BackchannelJudge
from callbridge.engine.conversation import Conversation
from callbridge.engine.events import CallEventKind, Phase, ReplyKind, TurnRecord
from callbridge.engine.replies import Replies
from callbridge.engine.speech import SpeechTracker
from callbridge.engine.words import CallerWords

__all__ = ["Pending", "Resumption"]

_RECHECK_S = 0.1  # the caller is still making a sound at the deadline: look again


@dataclass(frozen=True, slots=True)
class Pending:
    rest: str  # the reply's words the caller did not hear
    from_word: int  # index of the first of them in the reply
    deadline: float
    heard_before: str  # the turn's words at the barge-in (not this interruption's)


class Resumption:
    phase: Phase
    turns: TurnTaking
    speech: SpeechTracker
    conversation: Conversation
    _replies: Replies
    _words: CallerWords
    _stt: bool
    _backchannels: BackchannelJudge
    _endpoint_at: float | None
    _await_final_until: float | None
    stt_down: bool
    _pending_resume: Pending | None = None

    def _record(self, turn: TurnRecord) -> None:
        raise NotImplementedError  # CallEngine's

    def _event(self, kind: CallEventKind, level: int = 20, **data: str | int | float) -> None:
        raise NotImplementedError  # CallEngine's

    def _arm_resumption(self, now: float, spoken: str, heard: str) -> None:
        """Called by the barge-in (speech only): remember what the caller did not hear."""
        self._pending_resume = None
        if not self._stt or self.stt_down or self.turns.false_interruption_ms == 0:
            return
        words = spoken.split()
        at = len(heard.split())
        if at >= len(words):
            return  # they heard it all: nothing to go on with
        self._pending_resume = Pending(
            rest=" ".join(words[at:]),
            from_word=at,
            deadline=now + self.turns.false_interruption_ms / 1000,
            heard_before=self._words.text(),
        )

    def _resumption_deadline(self) -> float | None:
        pending = self._pending_resume
        return pending.deadline if pending is not None else None

    def _new_words(self) -> str:
        pending = self._pending_resume
        heard = self._words.heard()
        if pending is not None and pending.heard_before and heard.startswith(pending.heard_before):
            heard = heard[len(pending.heard_before) :]
        return heard.strip()

    def _check_resumption(self, now: float) -> None:
        """At the deadline: words mean a real interruption, none (or "okay") a false one."""
        pending = self._pending_resume
        if pending is None or now < pending.deadline:
            return
        if self.phase is not Phase.USER_SPEAKING or self.stt_down:
            self._pending_resume = None
            return
        words = self._new_words()
        if words and not self._backchannels.judge(words):
            self._cancel_resumption("caller_spoke")
            return
        if self.speech.run_ms > 0:
            # Still a sound and no words yet: wait for its end (or its words).
            self._pending_resume = Pending(
                pending.rest, pending.from_word, now + _RECHECK_S, pending.heard_before
            )
            return
        self._resume(now, words)

    def _resumes_instead(self, text: str, now: float) -> bool:
        """The interrupting turn ended with no words, or only a backchannel: go on."""
        if self._pending_resume is None:
            return False
        words = text.strip()
        if words and not self._backchannels.judge(words):
            self._cancel_resumption("caller_spoke")
            return False
        self._resume(now, words)
        return True

    def _cancel_resumption(self, reason: str) -> None:
        if self._pending_resume is not None:
            self._pending_resume = None
            self._event("resume_cancelled", reason=reason)

    def _resume(self, now: float, backchannel: str) -> None:
        pending = self._pending_resume
        assert pending is not None
        self._pending_resume = None
        final = not self._words.unfinished()  # else its final is recorded when it comes
        self._words.take()  # what there was is on record below, not a turn to answer
        self._endpoint_at = None
        self._await_final_until = None
        self._event(
            "false_interruption", words=len(backchannel.split()), backchannel=backchannel
        )
        if backchannel and final:
            self._record_backchannel(backchannel, now)
        prefix = (self.turns.resume_message or "").strip()
        text = f"{prefix} {pending.rest}".strip()
        self._replies.start(now, ReplyKind.RESUMPTION, text=text)
        self.phase = Phase.THINKING
        self._event("resumed", from_word=pending.from_word, words=len(pending.rest.split()))

    def _record_backchannel(self, text: str, now: float) -> None:
        """Kept in the transcript, marked, and not answered (not in the model's context)."""
        self._event("backchannel", text=text)
        self._record(TurnRecord("user", text, started_at=now, ended_at=now, kind="backchannel"))
