"""The call's state machine: events in, commands out, no I/O (DESIGN.md §3).

One ``CallEngine`` per call. Its shell (``session.py``) feeds it every event from the
call's single inbox together with the clock's time, performs the commands it emits, and
wakes it at ``next_deadline()``. Because the engine owns all call state and never awaits,
there are no races between flags, and each rule is tested with a manual clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from callbridge.assistant import TurnTaking
from callbridge.engine.backchannel import BackchannelJudge
from callbridge.engine.conversation import Conversation
from callbridge.engine.events import (
    SPEAKING_PHASES,
    CallEventKind,
    Command,
    EngineEvent,
    EngineNote,
    Hangup,
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
    SendClear,
    SttDown,
    SttFailed,
    SttUp,
    Tick,
    Transfer,
    TransferDone,
    TransferFailed,
    TurnJudged,
    TurnRecord,
)
from callbridge.engine.faults import Faults
from callbridge.engine.listening import Listening
from callbridge.engine.playout import Playout
from callbridge.engine.replies import Replies
from callbridge.engine.resumption import Resumption
from callbridge.engine.speech import SpeechTracker
from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    EndCall,
    MarkPlayed,
    SayText,
)
from callbridge.engine.words import CallerWords
from callbridge.providers.base import (
    SttSpeechStarted,
    SttUtteranceEnd,
    TranscriptUpdate,
    VadStream,
)

__all__ = ["CallEngine", "Script"]

log = logging.getLogger(__name__)

_TTS_GRACE_S = 30.0  # longest a goodbye may take to synthesise before we hang up regardless


@dataclass(frozen=True, slots=True)
class Script:
    """The fixed things the bot says, and the model's standing instructions."""

    first_message: str | None = None
    end_call_message: str | None = "Goodbye."
    idle_message: str = "Are you still there?"
    apology_message: str = "Sorry, I'm having trouble right now. Please call again later."
    system_prompt: str | None = None
    # Said (fallback TTS) when the caller has waited this long in silence while a
    # provider is retried; None: never.
    hold_message: str | None = "One moment, please."
    hold_after_s: float = 3.0
    transfer_failed_message: str | None = (
        "Sorry, I couldn't transfer your call. I can keep helping you here."
    )


class CallEngine(Faults, Resumption, Listening):  # Listening last: it stubs the others' hooks
    """One call's rules; the caller's side of them lives in ``listening.py``, what
    happens when a vendor fails in ``faults.py``, false interruptions in
    ``resumption.py``."""

    def __init__(
        self,
        turns: TurnTaking,
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
        self.conversation = Conversation(script.system_prompt)
        self.playout = Playout(send_ahead_ms=turns.send_ahead_ms, max_queued_s=turns.playout_max_s)
        self.speech = SpeechTracker()
        self.barge_ins = 0
        self.stale_interrupts = 0
        self._vad = vad
        self._threshold = vad_threshold
        self._stt = stt_enabled
        self._out: list[Command] = []
        self._replies = Replies(self.playout, self._out)
        self._started_at = 0.0
        self._idle_at: float | None = None
        self._reprompts = 0
        self._user_started_at = 0.0
        self._words = CallerWords()
        self._judged_run = 0  # speech run already judged for barge-in (stale or taken)
        self._backchannels = BackchannelJudge.for_language(turns.backchannels, turns.language)
        self._pending_resume = None
        self._endpoint_at: float | None = None
        self._await_final_until: float | None = None
        self._pending_ulaw = b""
        self._finalized_run = -1
        self._judge_turns = judge_turns and turns.end_of_turn == "smart-turn"
        self._turn_audio = bytearray()
        self._eot_asked_run = -1
        self._eot_verdict: tuple[int, bool] | None = None
        self._guess: str | None = None
        self._guess_base = ""
        self._ending_deadline: float | None = None
        self._announcements: list[str] = []  # SayText waiting for the bot's next pause
        self._init_faults(
            hold_message=script.hold_message,
            hold_after_s=script.hold_after_s,
            transfer_failed_message=script.transfer_failed_message,
        )

    # ------------------------------------------------------------ shell interface

    def start(self, now: float) -> None:
        self._started_at = now
        if self.script.first_message:
            self._replies.start(now, ReplyKind.GREETING, text=self.script.first_message)
            self.phase = Phase.GREETING
        else:
            self._listen(now)

    def take_commands(self) -> list[Command]:
        out = self._out.copy()
        self._out.clear()  # cleared in place: Replies appends to the same list
        return out

    def next_deadline(self) -> float | None:
        if self.phase is Phase.ENDED:
            return None
        # Only deadlines that _check_timers acts on in this phase: any other would be
        # past-due forever and spin the session's loop.
        deadlines = []
        if self.phase is not Phase.ENDING:
            deadlines.append(self._started_at + self.turns.max_duration_s)
        for candidate in (
            self._idle_at if self.phase is Phase.LISTENING else None,
            self._await_final_until,
            self._hangup_deadline(),
            self._ending_deadline,
            self._hold_deadline(),
            self._resumption_deadline() if self.phase is Phase.USER_SPEAKING else None,
        ):
            if candidate is not None:
                deadlines.append(candidate)
        playout = self.playout.next_deadline() if self._held() is None else None
        if playout is not None:
            deadlines.append(playout)
        return min(deadlines) if deadlines else None

    def handle(self, event: EngineEvent, now: float) -> None:
        if self.phase is Phase.ENDED:
            return
        current = self._replies.is_current
        match event:
            case CallerAudio(ulaw=data, timestamp_ms=stamp):
                self._on_audio(data, stamp, now)
            case TranscriptUpdate():
                self._on_transcript(event, now)
            case CallerDtmf(digit=digit):
                self._on_dtmf(digit, now)
            case MarkPlayed(name=name):
                self.playout.mark_played(name, now)
            case ReplySegment(reply_id=rid, index=index, text=text) if current(rid):
                self._replies.on_segment(index, text, now)
            case ReplyAudio(reply_id=rid, index=index, ulaw=data) if current(rid):
                self._on_reply_audio(index, data, now)
            case ReplyAction(reply_id=rid, call=call) if current(rid):
                self._replies.on_action(call.name, call.arguments)
            case ReplyDone(reply_id=rid) if current(rid):
                self._replies.on_done()
            case ReplyFailed(reply_id=rid, error=error, provider=provider) if current(rid):
                self._on_reply_failed(error, provider, now)
            case CallerHungUp(reason=reason):
                self._on_hung_up(reason, now)
            case EndCall(reason=reason, message=message):
                self._on_end_requested(reason, message, now)
            case SayText(text=text):
                self._announcements.append(text)
                if self.phase is Phase.LISTENING:
                    self._listen(now)
            case SttDown(provider=provider, error=error):
                self._on_stt_down(provider, error, now)
            case SttUp(provider=provider, resent_ms=resent_ms):
                self._on_stt_up(provider, resent_ms, now, self.turns.stt_timeout_ms / 1000)
            case SttFailed(provider=provider, error=error):
                self._on_stt_failed(provider, error, now, self.script.apology_message)
            case HoldAudio(hold_id=hold_id, ulaw=data):
                self._on_hold_audio(hold_id, data)
            case HoldDone(hold_id=hold_id):
                self._on_hold_done(hold_id, now)
            case TransferDone():
                self._on_transfer_done()
            case TransferFailed(error=error):
                self._on_transfer_failed(error, now)
            case TurnJudged(run_id=run_id, finished_probability=probability):
                self._on_turn_judged(run_id, probability)
            case SttSpeechStarted() | SttUtteranceEnd() | Tick():
                pass
            case _:
                pass  # events of a cancelled reply: it is gone, its audio must not play
        self._pump(now)

    # ------------------------------------------------------------ barge-in

    def _consider_barge_in(self, now: float) -> None:
        if self._judged_run == self.speech.run_id:
            return
        if self._stt and not self.stt_down and self._waits_for_words():
            return  # the transcriber has not heard enough words of this speech yet
        # (While STT is down, barge-in runs on the VAD alone: no words are coming.)
        self._judged_run = self.speech.run_id
        onset = self.speech.onset_at if self.speech.onset_at is not None else now
        if (now - onset) * 1000 > self.turns.interrupt_max_lag_ms:
            self.stale_interrupts += 1
            self._event("barge_in_stale", lag_ms=round((now - onset) * 1000))
            return
        self._barge_in(now, reason="speech")

    def _waits_for_words(self) -> bool:
        """``interruptMinWords`` against the live transcript of this speech run.

        One word (the default) keeps barge-in as fast as the VAD: it waits only once the
        transcriber has reported this speech without words (an empty interim). Two or
        more is a deliberate trade of speed for ignoring "mm-hm": with a transcriber that
        streams interims it waits for the words even before the first interim of this
        speech, bounded by ``interruptMaxLagMs``. A finals-only transcriber gives no
        words while the caller talks, so there barge-in stays the VAD's.
        """
        needed = self.turns.interrupt_min_words
        words = self._words.in_run
        if words is None:
            return (needed >= 2 and self._words.interims_seen) or self._may_be_backchannel()
        return words < needed or self._may_be_backchannel()

    def _may_be_backchannel(self) -> bool:
        """Speech over the bot that is, so far, only "uh-huh" (or no words yet, with a
        transcriber that streams interims: they decide). The first word that is not a
        backchannel barges in at once; so does a run longer than ``backchannelMaxMs``."""
        limit = self.turns.backchannel_max_ms
        if not limit or not self._backchannels.enabled or not self._words.interims_seen:
            return False
        if self.speech.run_ms >= limit:
            return False
        if not self._words.in_run:
            return True
        return self._backchannels.judge(self._words.run_text)

    def _barge_in(self, now: float, *, reason: str) -> None:
        """The one place that stops the bot: clear the line, cancel, keep what was heard."""
        self._out.append(SendClear())
        heard = self.playout.heard_text(now)
        spoken = self.playout.spoken_text()
        reply = self._replies.current
        self._replies.cancel()
        self.playout.clear(now)
        self.conversation.add_assistant(heard)
        self.barge_ins += 1
        if reason == "speech":
            self._arm_resumption(now, spoken, heard)  # in case no words follow
        self._record(
            reply.record(spoken, heard, now, interrupted=True)
            if reply
            else TurnRecord("assistant", spoken, heard, interrupted=True, ended_at=now)
        )
        onset = self.speech.onset_at
        self._event(
            "barge_in",
            reason=reason,
            heard_words=len(heard.split()),
            reaction_ms=round((now - onset) * 1000) if reason == "speech" and onset else 0,
        )
        self._begin_user_turn(now)

    # ------------------------------------------------------------ replies

    def _on_reply_audio(self, index: int, data: bytes, now: float) -> None:
        if self.phase is Phase.THINKING:
            self.phase = Phase.BOT_SPEAKING
        self._replies.on_audio(index, data, now)

    def _on_reply_failed(self, error: str, provider: str, now: float) -> None:
        self._event("reply_failed", logging.ERROR, error=error)
        if provider:
            self._event("provider_failed", logging.ERROR, stage="reply", provider=provider,
                        error=error)
        reply, spoken = self._replies.current, self.playout.spoken_text()
        self._replies.on_failed()
        if reply is not None and spoken.strip():
            # Its words still play out; on record it is a reply cut short, not the apology.
            self._record(reply.record(spoken, spoken, now, interrupted=True))
            self.playout.mark_told()
        if self.phase is Phase.ENDING:
            self._hang_up("ending_failed")  # the goodbye or apology itself failed: no loop
            return
        self._end_call(now, ReplyKind.APOLOGY, self.script.apology_message)

    def _end_call(self, now: float, kind: ReplyKind, text: str | None) -> None:
        """Say ``text`` (if any) after what is already queued, then hang up."""
        self._idle_at = None
        self._await_final_until = None
        self.phase = Phase.ENDING
        self._ending_deadline = now + self.turns.hangup_mark_timeout_s + _TTS_GRACE_S
        if text:
            self._replies.start(now, kind, text=text)
        else:
            self._replies.current = None
            self._hang_up("ended")

    def _hang_up(self, reason: str) -> None:
        self._event("hangup", reason=reason)
        self._out.append(Hangup(reason))
        self.phase = Phase.ENDED

    # ------------------------------------------------------------ timers and completion

    def _pump(self, now: float) -> None:
        if self.phase is Phase.ENDED:
            return
        sent = self.playout.pull(now) if self._held() is None else []
        if sent:
            self._out.extend(sent)
            self._replies.note_sent(now)
        self._check_reply_complete(now)
        self._check_timers(now)

    def _check_reply_complete(self, now: float) -> None:
        reply = self._replies.current
        if reply is None or reply.held or not reply.done or not self.playout.all_sent():
            return
        if reply.all_sent_at is None:
            reply.all_sent_at = now
        if self.playout.busy():
            return  # sent, but the line has not played it all yet
        spoken = self.playout.spoken_text()
        if reply.kind is ReplyKind.RESUMPTION:
            self.conversation.continue_assistant(spoken)
        else:
            self.conversation.add_assistant(spoken)
        self._record(reply.record(spoken, spoken, now))
        self.playout.finish_utterance()
        self._replies.current = None
        if reply.kind in (ReplyKind.GOODBYE, ReplyKind.APOLOGY):
            self._hang_up(reply.kind.value)
        elif reply.transfer_to is not None:
            self._event("transfer")
            self._out.append(Transfer(reply.transfer_to))
            self._begin_transfer(now)  # ENDED once the line confirms, or talk on if it fails
        elif reply.hangup_after:
            if spoken.strip():
                self._hang_up("end_call")
            else:
                self._end_call(now, ReplyKind.GOODBYE, self.script.end_call_message)
        else:
            self._listen(now)

    def _listen(self, now: float) -> None:
        if self._announcements and self.speech.run_ms < self.turns.start_ms:
            self._idle_at = None
            self._replies.start(now, ReplyKind.ANNOUNCEMENT, text=self._announcements.pop(0))
            self.phase = Phase.THINKING
            return
        self.phase = Phase.LISTENING
        self._idle_at = now + self.turns.idle_timeout_s
        if self.speech.run_ms >= self.turns.start_ms:
            self._begin_user_turn(now)  # the caller was already talking as we finished

    def _hangup_deadline(self) -> float | None:
        reply = self._replies.current
        if self.phase is not Phase.ENDING or reply is None or reply.all_sent_at is None:
            return None
        return reply.all_sent_at + self.turns.hangup_mark_timeout_s

    def _check_timers(self, now: float) -> None:
        if self.phase is Phase.ENDED:
            return
        if self.phase is not Phase.ENDING and now >= self._started_at + self.turns.max_duration_s:
            self._event("max_duration")
            if self.phase in SPEAKING_PHASES:
                self._out.append(SendClear())
                self.playout.clear(now)
            self._replies.cancel()
            self._end_call(now, ReplyKind.GOODBYE, self.script.end_call_message)
            return
        deadline = self._hangup_deadline()
        if self._ending_deadline is not None and now >= self._ending_deadline:
            deadline = now  # the goodbye never finished synthesising: hang up anyway
        if deadline is not None and now >= deadline:
            self._event("mark_timeout", logging.WARNING)
            self._hang_up("mark_timeout")
            return
        if self._await_final_until is not None and now >= self._await_final_until:
            if self.stt_down:
                self._await_final_until = None  # the words come with the reconnect
                return
            self._event("stt_timeout")
            self._finish_user_turn(now)
            return
        self._check_hold(now)
        self._check_resumption(now)
        if self.phase is Phase.LISTENING and self._idle_at is not None and now >= self._idle_at:
            self._idle_at = None
            if self._reprompts < self.turns.idle_max_reprompts:
                self._reprompts += 1
                self._replies.start(now, ReplyKind.REPROMPT, text=self.script.idle_message)
                self.phase = Phase.THINKING
            else:
                self._end_call(now, ReplyKind.GOODBYE, self.script.end_call_message)

    def _on_hung_up(self, reason: str, now: float) -> None:
        reply = self._replies.current
        if reply is not None and self.phase in (*SPEAKING_PHASES, Phase.ENDING):
            heard = self.playout.heard_text(now)
            self._record(reply.record(self.playout.spoken_text(), heard, now, interrupted=True))
        self._replies.cancel()
        self._event("caller_hung_up", reason=reason)
        self.phase = Phase.ENDED

    def _on_end_requested(self, reason: str, message: str | None, now: float) -> None:
        """The server ends the call (drain timeout, API): stop talking, say goodbye, hang up."""
        if self.phase is Phase.ENDING:
            return
        self._event("end_requested", reason=reason)
        reply = self._replies.current
        if reply is not None and self.phase in SPEAKING_PHASES:
            heard = self.playout.heard_text(now)
            self._record(reply.record(self.playout.spoken_text(), heard, now, interrupted=True))
            self.conversation.add_assistant(heard)
            self._out.append(SendClear())
            self.playout.clear(now)
        self._replies.cancel()
        text = self.script.end_call_message if message is None else message
        self._end_call(now, ReplyKind.GOODBYE, text)

    def _record(self, turn: TurnRecord) -> None:
        self._out.append(RecordTurn(turn))

    def _event(
        self, kind: CallEventKind, level: int = logging.INFO, **data: str | int | float
    ) -> None:
        """Log it and hand it to the call's record, typed (never parsed back from logs)."""
        if log.isEnabledFor(level):
            log.log(level, "%s %s", kind, " ".join(f"{k}={v}" for k, v in data.items()))
        self._out.append(RecordEvent(EngineNote(kind, data)))
