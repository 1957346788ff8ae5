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

``Faults`` is a part of ``CallEngine`` (``core.py``) and owns only its own state.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from callbridge.engine.events import Phase, ReplyKind, SpeakHold
from callbridge.engine.replies import ReplyStage

if TYPE_CHECKING:
    from callbridge.engine.core import CallEngine

__all__ = ["HOLD_REPLY_ID", "Faults"]

HOLD_REPLY_ID = 0
"""Hold lines are playout segments ``(0, hold_id)``: reply ids start at 1."""
_MAX_HOLDS = 2
# Module globals for the per-wake checks (an Enum member's class lookup is ~0.15 µs).
_THINKING, _USER_SPEAKING, _BOT_SPEAKING = Phase.THINKING, Phase.USER_SPEAKING, Phase.BOT_SPEAKING
_WAITING = ReplyStage.WAITING
_TRANSFER_GRACE_S = 30.0  # a line that never reports the transfer's outcome is hung up


class Faults:
    def __init__(self, engine: CallEngine) -> None:
        self.e = engine
        script = engine.script
        self.stt_down = False
        self._stt_down_at = 0.0
        self._hold_message = script.hold_message
        self._hold_after_s = script.hold_after_s
        self._transfer_failed_message = script.transfer_failed_message
        self._next_hold_at: float | None = None
        self._holds_this_wait = 0
        self._hold_ids = 0
        self._holds_open: set[int] = set()
        self.transferring = False

    # ------------------------------------------------------------ the transcriber

    def on_stt_down(self, provider: str, error: str, now: float) -> None:
        if not self.stt_down:
            self.stt_down, self._stt_down_at = True, now
        # A final we were waiting for died with the stream: wait for the reconnect.
        self.e.listening.await_final_until = None
        self.e.note("stt_lost", logging.WARNING, provider=provider, error=error)

    def on_stt_up(self, provider: str, resent_ms: int, now: float) -> None:
        e = self.e
        down_ms = round((now - self._stt_down_at) * 1000) if self.stt_down else 0
        self.stt_down = False
        e.note("stt_restored", provider=provider, down_ms=down_ms, resent_ms=resent_ms)
        if e.phase is Phase.USER_SPEAKING and e.listening.endpoint_at is not None:
            # The turn ended while STT was down; the re-sent audio is being finalised.
            e.listening.await_final_until = now + e.turns.stt_timeout_ms / 1000

    def on_stt_failed(self, provider: str, error: str, now: float) -> None:
        self.e.note("provider_failed", logging.ERROR, stage="stt", provider=provider,
                    error=error)
        self.give_up(now)

    def give_up(self, now: float) -> None:
        """Stop what the bot is saying, apologise and hang up."""
        e = self.e
        if e.phase in (Phase.ENDING, Phase.ENDED):
            return
        e.ending.stop_and_end(now, ReplyKind.APOLOGY, e.script.apology_message,
                              clear=e.playout.busy())

    # ------------------------------------------------------------ dead air

    def arm_hold(self, now: float) -> None:
        """The caller just finished a turn: from here, silence is ours."""
        self._holds_this_wait = 0
        self._next_hold_at = now + self._hold_after_s if self._hold_message else None

    def hold_deadline(self) -> float | None:
        if self._holds_open or self._holds_this_wait >= _MAX_HOLDS:
            return None  # a line is playing, or this wait had its share
        phase = self.e.phase
        if phase is _BOT_SPEAKING:
            # Stalled mid-reply: nothing of it left to send (asked first: while it talks,
            # twice a frame, that is the answer) and more of it owed.
            playout = self.e.playout
            if playout.next_deadline() is not None:
                return None
            reply = self.e.speaker.replies.current
            if reply is None or reply.done or not self._hold_message:
                return None
            # Everything the reply sent has played and more is owed: the silence began
            # when the last frame finished.
            return playout.last_frame_end + self._hold_after_s
        return self._next_hold_at if self._waiting_in_silence() else None

    def _waiting_in_silence(self) -> bool:
        """No hold line playing and holds left (``hold_deadline`` checks)."""
        e = self.e
        phase = e.phase
        if phase is _THINKING:
            reply = e.speaker.replies.current
            return reply is not None and not reply.held and reply.stage is _WAITING
        return phase is _USER_SPEAKING and e.listening.endpoint_at is not None and self.stt_down

    def check_hold(self, now: float) -> None:
        if not self._hold_message:
            return  # no line to say (``hold_deadline`` has none then, or it is not said)
        at = self.hold_deadline()
        if at is None or now < at:
            return
        self._next_hold_at = None
        self._hold_ids += 1
        self._holds_this_wait += 1
        self._holds_open.add(self._hold_ids)
        self.e.playout.begin_segment((HOLD_REPLY_ID, self._hold_ids), self._hold_message,
                                     before_unsent=True)
        self.e.send(SpeakHold(self._hold_ids, self._hold_message))
        self.e.note("hold", waited_ms=round(self._hold_after_s * 1000))

    def on_hold_audio(self, hold_id: int, data: bytes) -> None:
        if hold_id in self._holds_open:
            self.e.playout.add_audio((HOLD_REPLY_ID, hold_id), data)

    def on_hold_done(self, hold_id: int, now: float) -> None:
        if hold_id not in self._holds_open:
            return
        self._holds_open.discard(hold_id)
        self.e.playout.end_segment((HOLD_REPLY_ID, hold_id))
        # Still waiting after this line has played: another one after the next wait.
        self._next_hold_at = max(now, self.e.playout.play_end) + self._hold_after_s

    # ------------------------------------------------------------ transfer

    def begin_transfer(self, now: float) -> None:
        self.transferring = True
        self.e.enter(Phase.ENDING)
        self.e.ending.deadline = now + _TRANSFER_GRACE_S

    def on_transfer_done(self) -> None:
        self.transferring = False
        self.e.note("transfer")
        self.e.enter(Phase.ENDED)

    def on_transfer_failed(self, error: str, now: float) -> None:
        e = self.e
        if not self.transferring:
            return
        self.transferring = False
        e.ending.deadline = None
        e.note("transfer_failed", logging.ERROR, error=error)
        if self._transfer_failed_message:
            # Said like an answer: the caller may speak over it, then we listen again.
            e.speaker.replies.start(now, ReplyKind.ANSWER, text=self._transfer_failed_message)
            e.enter(Phase.THINKING)
        else:
            e.listening.listen(now)
