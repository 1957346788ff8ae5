"""How a reply finishes and how a call ends: the goodbye, the apology, the hang-up.

A reply is complete once its task is done, all of it was sent and the line has played
it (the marks came back): then it is recorded as said, and the call listens again, or
hangs up (goodbye, apology, the model's ``end_call``), or transfers. Ending the call
says a last line (if any) after what is queued, then hangs up; the line's marks, or a
timeout, say when. Part of ``CallEngine`` (``core.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from callbridge.engine.events import (
    SPEAKING_PHASES,
    Hangup,
    Phase,
    ReplyKind,
    Transfer,
)

if TYPE_CHECKING:
    from callbridge.engine.core import CallEngine

__all__ = ["Ending"]

_TTS_GRACE_S = 30.0  # longest a goodbye may take to synthesise before we hang up regardless


class Ending:
    def __init__(self, engine: CallEngine) -> None:
        self.e = engine
        self.deadline: float | None = None  # hang up at this time whatever happens

    # ------------------------------------------------------------ a reply completes

    def check_reply_complete(self, now: float) -> None:
        e = self.e
        speaker = e.speaker
        reply = speaker.replies.current
        if reply is None or reply.held or not reply.done:
            return  # (asked after every event while a reply is on)
        playout = speaker.playout
        if not playout.all_sent():
            return
        reply.all_sent(now)
        if playout.busy():
            return  # sent, but the line has not played it all yet
        spoken = playout.spoken_text()
        if reply.kind is ReplyKind.RESUMPTION:
            e.conversation.continue_assistant(spoken)
        else:
            e.conversation.add_assistant(spoken)
        e.record(reply.record(spoken, spoken, now))
        playout.finish_utterance()
        speaker.replies.current = None
        if reply.kind in (ReplyKind.GOODBYE, ReplyKind.APOLOGY):
            self.hang_up(reply.kind.value)
        elif reply.transfer_to is not None:
            e.note("transfer")
            e.send(Transfer(reply.transfer_to))
            e.faults.begin_transfer(now)  # ENDED once the line confirms, or talk on
        elif reply.hangup_after:
            if spoken.strip():
                self.hang_up("end_call")
            else:
                self.end_call(now, ReplyKind.GOODBYE, e.script.end_call_message)
        else:
            e.listening.listen(now)

    def on_reply_failed(self, error: str, provider: str, now: float) -> None:
        e = self.e
        e.note("reply_failed", logging.ERROR, error=error)
        if provider:
            e.note("provider_failed", logging.ERROR, stage="reply", provider=provider,
                   error=error)
        reply, spoken = e.speaker.reply, e.playout.spoken_text()
        e.speaker.replies.on_failed()
        if reply is not None and spoken.strip():
            # Its words still play out; on record it is a reply cut short, not the apology.
            e.record(reply.record(spoken, spoken, now, interrupted=True))
            e.playout.mark_told()
        if e.phase is Phase.ENDING:
            self.hang_up("ending_failed")  # the goodbye or apology itself failed: no loop
            return
        self.end_call(now, ReplyKind.APOLOGY, e.script.apology_message)

    # ------------------------------------------------------------ ending the call

    def end_call(self, now: float, kind: ReplyKind, text: str | None) -> None:
        """Say ``text`` (if any) after what is already queued, then hang up."""
        e = self.e
        e.listening.stop_waiting()
        e.enter(Phase.ENDING)
        self.deadline = now + e.turns.hangup_mark_timeout_s + _TTS_GRACE_S
        if text:
            e.speaker.replies.start(now, kind, text=text)
        else:
            e.speaker.replies.current = None
            self.hang_up("ended")

    def hang_up(self, reason: str) -> None:
        self.e.note("hangup", reason=reason)
        self.e.send(Hangup(reason))
        self.e.enter(Phase.ENDED)

    def stop_and_end(
        self, now: float, kind: ReplyKind, text: str | None, *, clear: bool,
        keep_heard: bool = False,
    ) -> None:
        """Silence the bot (``barge_in``; ``clear`` when its audio may be on the line),
        optionally keep what the caller heard of it, and end the call with ``text``."""
        e = self.e
        cut, reply = e.speaker.barge_in(now, clear=clear)
        if reply is not None and keep_heard:
            e.record(reply.record(cut.spoken, cut.heard, now, interrupted=True))
            e.conversation.add_assistant(cut.heard)
        self.end_call(now, kind, text)

    def max_duration(self, now: float) -> None:
        e = self.e
        e.note("max_duration")
        self.stop_and_end(now, ReplyKind.GOODBYE, e.script.end_call_message,
                          clear=e.phase in SPEAKING_PHASES)

    def on_end_requested(self, reason: str, message: str | None, now: float) -> None:
        """The server ends the call (drain timeout, API): stop talking, say goodbye, hang up."""
        e = self.e
        e.note("end_requested", reason=reason)
        text = e.script.end_call_message if message is None else message
        speaking = e.phase in SPEAKING_PHASES and e.speaker.reply is not None
        self.stop_and_end(now, ReplyKind.GOODBYE, text, clear=speaking, keep_heard=speaking)

    def on_hung_up(self, reason: str, now: float) -> None:
        e = self.e
        reply = e.speaker.reply
        if reply is not None and e.phase in (*SPEAKING_PHASES, Phase.ENDING):
            heard = e.playout.heard_text(now)
            e.record(reply.record(e.playout.spoken_text(), heard, now, interrupted=True))
        e.speaker.replies.cancel()  # the line is gone: nothing to clear
        e.note("caller_hung_up", reason=reason)
        e.enter(Phase.ENDED)

    # ------------------------------------------------------------ deadlines

    def hangup_deadline(self) -> float | None:
        reply = self.e.speaker.reply
        if self.e.phase is not Phase.ENDING or reply is None or reply.all_sent_at is None:
            return None
        return reply.all_sent_at + self.e.turns.hangup_mark_timeout_s

    def check_deadlines(self, now: float) -> bool:
        """Hang up once the goodbye's marks are overdue (or it never got synthesised)."""
        deadline = self.hangup_deadline()
        if self.deadline is not None and now >= self.deadline:
            deadline = now
        if deadline is None or now < deadline:
            return False
        self.e.note("mark_timeout", logging.WARNING)
        self.hang_up("mark_timeout")
        return True

