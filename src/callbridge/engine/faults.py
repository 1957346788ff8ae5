"""What the call does when a vendor fails (DESIGN.md §3 "Failures", §9 "Faults").

Every fault is either repaired or heard, and always recorded:
- the transcriber drops: the turn logic goes on with the VAD; a turn that ended while it
  was down waits for it (its unfinalised audio is re-sent on reconnect, ``stt_link.py``)
  instead of being answered without words; if it never comes back, apology and hang-up;
- a reply fails (LLM or TTS, after the reply task's retries): apology and hang-up;
- a transfer fails: the caller is told, and the conversation goes on;
- dead air: a caller waiting in silence while retries run (for the answer's first audio,
  for the transcriber, or for the rest of a reply whose voice stalled mid-sentence)
  hears a short "one moment" line after ``Script.hold_after_s``, again after each
  further wait, at most ``_MAX_HOLDS`` times per turn.

``Faults`` is a part of ``CallEngine`` (a mixin), like ``Listening``.
"""

from __future__ import annotations

import logging

from callbridge.engine.events import (
    CallEventKind,
    Command,
    Phase,
    ReplyKind,
    SendClear,
    SpeakHold,
)
from callbridge.engine.playout import Playout
from callbridge.engine.replies import Replies

__all__ = ["HOLD_REPLY_ID", "Faults"]

HOLD_REPLY_ID = 0
"""Hold lines are playout segments ``(0, hold_id)``: reply ids start at 1."""
_MAX_HOLDS = 2
_TRANSFER_GRACE_S = 30.0  # a line that never reports the transfer's outcome is hung up


class Faults:
    phase: Phase
    playout: Playout
    _out: list[Command]
    _replies: Replies
    _endpoint_at: float | None
    _await_final_until: float | None
    _idle_at: float | None
    _ending_deadline: float | None

    # CallEngine's
    def _end_call(self, now: float, kind: ReplyKind, text: str | None) -> None:
        raise NotImplementedError

    def _event(
        self, kind: CallEventKind, level: int = logging.INFO, **data: str | int | float
    ) -> None:
        raise NotImplementedError

    def _listen(self, now: float) -> None:
        raise NotImplementedError

    def _hang_up(self, reason: str) -> None:
        raise NotImplementedError

    def _init_faults(self, *, hold_message: str | None, hold_after_s: float,
                     transfer_failed_message: str | None) -> None:
        self.stt_down = False
        self._stt_down_at = 0.0
        self._hold_message = hold_message
        self._hold_after_s = hold_after_s
        self._transfer_failed_message = transfer_failed_message
        self._next_hold_at: float | None = None
        self._holds_this_wait = 0
        self._hold_ids = 0
        self._holds_open: set[int] = set()
        self.transferring = False

    # ------------------------------------------------------------ the transcriber

    def _on_stt_down(self, provider: str, error: str, now: float) -> None:
        if not self.stt_down:
            self.stt_down, self._stt_down_at = True, now
        # A final we were waiting for died with the stream: wait for the reconnect.
        self._await_final_until = None
        self._event("stt_lost", logging.WARNING, provider=provider, error=error)

    def _on_stt_up(self, provider: str, resent_ms: int, now: float, stt_timeout_s: float) -> None:
        down_ms = round((now - self._stt_down_at) * 1000) if self.stt_down else 0
        self.stt_down = False
        self._event("stt_restored", provider=provider, down_ms=down_ms, resent_ms=resent_ms)
        if self.phase is Phase.USER_SPEAKING and self._endpoint_at is not None:
            # The turn ended while STT was down; the re-sent audio is being finalised.
            self._await_final_until = now + stt_timeout_s

    def _on_stt_failed(self, provider: str, error: str, now: float, apology: str) -> None:
        self._event("provider_failed", logging.ERROR, stage="stt", provider=provider, error=error)
        self._give_up(now, apology)

    def _give_up(self, now: float, apology: str) -> None:
        """Stop what the bot is saying, apologise and hang up."""
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return
        if self.playout.busy():
            self._out.append(SendClear())
            self.playout.clear(now)
        self._replies.cancel()
        self._end_call(now, ReplyKind.APOLOGY, apology)

    # ------------------------------------------------------------ dead air

    def _arm_hold(self, now: float) -> None:
        """The caller just finished a turn: from here, silence is ours."""
        self._holds_this_wait = 0
        self._next_hold_at = now + self._hold_after_s if self._hold_message else None

    def _hold_deadline(self) -> float | None:
        if self._stalled_mid_reply():
            # Everything the reply sent has played and more is owed: the silence began
            # when the last frame finished.
            return self.playout.last_frame_end + self._hold_after_s if self._hold_message else None
        return self._next_hold_at if self._waiting_in_silence() else None

    def _stalled_mid_reply(self) -> bool:
        reply = self._replies.current
        return (
            self.phase is Phase.BOT_SPEAKING
            and reply is not None
            and not reply.done
            and not self._holds_open
            and self._holds_this_wait < _MAX_HOLDS
            and self.playout.next_deadline() is None  # nothing of it left to send
        )

    def _waiting_in_silence(self) -> bool:
        if self._holds_open or self._holds_this_wait >= _MAX_HOLDS:
            return False
        if self.phase is Phase.THINKING:
            reply = self._replies.current
            return reply is not None and not reply.held and reply.first_audio_at is None
        return (
            self.phase is Phase.USER_SPEAKING
            and self._endpoint_at is not None
            and self.stt_down
        )

    def _check_hold(self, now: float) -> None:
        at = self._hold_deadline()
        if at is None or now < at or self._hold_message is None:
            return
        self._next_hold_at = None
        self._hold_ids += 1
        self._holds_this_wait += 1
        self._holds_open.add(self._hold_ids)
        self.playout.begin_segment((HOLD_REPLY_ID, self._hold_ids), self._hold_message,
                                   before_unsent=True)
        self._out.append(SpeakHold(self._hold_ids, self._hold_message))
        self._event("hold", waited_ms=round(self._hold_after_s * 1000))

    def _on_hold_audio(self, hold_id: int, data: bytes) -> None:
        if hold_id in self._holds_open:
            self.playout.add_audio((HOLD_REPLY_ID, hold_id), data)

    def _on_hold_done(self, hold_id: int, now: float) -> None:
        if hold_id not in self._holds_open:
            return
        self._holds_open.discard(hold_id)
        self.playout.end_segment((HOLD_REPLY_ID, hold_id))
        # Still waiting after this line has played: another one after the next wait.
        self._next_hold_at = max(now, self.playout.play_end) + self._hold_after_s

    # ------------------------------------------------------------ transfer

    def _begin_transfer(self, now: float) -> None:
        self.transferring = True
        self.phase = Phase.ENDING
        self._ending_deadline = now + _TRANSFER_GRACE_S

    def _on_transfer_done(self) -> None:
        self.transferring = False
        self._event("transfer")
        self.phase = Phase.ENDED

    def _on_transfer_failed(self, error: str, now: float) -> None:
        if not self.transferring:
            return
        self.transferring = False
        self._ending_deadline = None
        self._event("transfer_failed", logging.ERROR, error=error)
        if self._transfer_failed_message:
            # Said like an answer: the caller may speak over it, then we listen again.
            self._replies.start(now, ReplyKind.ANSWER, text=self._transfer_failed_message)
            self.phase = Phase.THINKING
        else:
            self._listen(now)
