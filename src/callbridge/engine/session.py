"""The async shell around one ``CallEngine``: the call's single owner task.

It runs on the engine's one ``Shell`` (``shell.py``): the call's one inbox (line events
from the socket adapter, the caller's frames and the deadlines' wake-ups from the
process's metronome, transcripts from STT, audio from the reply task), each event handed
to the engine with the time, and the engine's commands carried out here (a reply task
started or cancelled and waited for, STT finalised, a hold line, a transfer; audio,
marks and ``clear`` go to the line through the shell). Every task it starts lives in the
call's TaskGroup, so nothing outlives the call, and none of them lets a provider's
exception out: the transcriber heals itself (``stt_link.py``), a reply reports its
failure as an event, and a failed transfer or hold line is told to the engine, so a
vendor fault is heard and recorded, never a socket error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from callbridge.clock import Clock, MonotonicClock
from callbridge.engine.config import Script, TurnRules
from callbridge.engine.core import CallEngine
from callbridge.engine.events import (
    CallEvent,
    CancelReply,
    Command,
    EngineEvent,
    FinalizeStt,
    Hangup,
    HoldAudio,
    HoldDone,
    JudgeTurn,
    RecordEvent,
    RecordTurn,
    ReplyKind,
    SendAudio,
    SendClear,
    SendMark,
    SpeakHold,
    StartReply,
    Transfer,
    TransferDone,
    TransferFailed,
    TurnJudged,
    TurnRecord,
    WarmUp,
)
from callbridge.engine.metronome import Metronome
from callbridge.engine.reply import ToolExecutor, run_reply
from callbridge.engine.shell import Shell
from callbridge.engine.stt_link import DEFAULT_FINAL_TIMEOUT_S, DEFAULT_RESEND_S, SttLink
from callbridge.engine.transport import CallInfo, CallTransport, Line
from callbridge.engine.warm import warm_up
from callbridge.providers.base import (
    LanguageModel,
    PerCallTextToSpeech,
    SpeechToText,
    TextToSpeech,
    ToolSpec,
    TurnJudge,
    VadModel,
)
from callbridge.providers.retry import DEFAULT_DELAYS_S, OnRetry, Sleep, record_retries

__all__ = ["CallSession", "Voice"]

log = logging.getLogger(__name__)

_CANCEL_WAIT_S = 2.0  # a provider that ignores cancellation this long is abandoned


class Voice:
    """The providers one call uses (shared objects; per-call streams are opened here)."""

    def __init__(
        self,
        *,
        vad: VadModel,
        stt: SpeechToText,
        llm: LanguageModel,
        tts: TextToSpeech,
        fallback_tts: TextToSpeech | None = None,
        tools: Sequence[ToolSpec] = (),
        execute_tool: ToolExecutor | None = None,
        retry_delays_s: Sequence[float] = DEFAULT_DELAYS_S,
        stt_resend_s: float = DEFAULT_RESEND_S,
        stt_final_timeout_s: float = DEFAULT_FINAL_TIMEOUT_S,
        sleep: Sleep = asyncio.sleep,
        turn_judge: TurnJudge | None = None,
    ) -> None:
        self.turn_judge = turn_judge
        self.vad = vad
        self.stt = stt
        self.llm = llm
        self.tts = tts
        self.fallback_tts = fallback_tts or tts
        self.tools = tuple(tools)
        self.execute_tool = execute_tool
        self.retry_delays_s = tuple(retry_delays_s)
        self.stt_resend_s = stt_resend_s
        self.stt_final_timeout_s = stt_final_timeout_s
        self.sleep = sleep  # the retry policy's waits (tests run it without waiting)

    @property
    def transcribes(self) -> bool:
        return getattr(self.stt, "name", "none") != "none"


class CallSession:
    def __init__(
        self,
        info: CallInfo,
        transport: CallTransport,
        voice: Voice,
        engine: CallEngine,
        *,
        clock: Clock | None = None,
        on_turn: Callable[[TurnRecord], None] | None = None,
        on_event: Callable[[CallEvent], None] | None = None,
        metronome: Metronome | None = None,
    ) -> None:
        self.info = info
        self.engine = engine
        self._shell: Shell[EngineEvent] = Shell(
            transport, clock or MonotonicClock(), on_event=on_event, metronome=metronome
        )
        self._transport = transport
        self._voice = voice
        self._on_turn = on_turn
        # The providers' retries reach the call's record through the same emit.
        self._on_retry: OnRetry | None = record_retries(on_event) if on_event is not None else None
        self._replies: dict[int, asyncio.Task[None]] = {}
        self._stt: SttLink | None = None
        self._tts: TextToSpeech = voice.tts

    @classmethod
    def create(
        cls,
        info: CallInfo,
        transport: CallTransport,
        voice: Voice,
        turns: TurnRules,
        script: Script,
        *,
        clock: Clock | None = None,
        on_turn: Callable[[TurnRecord], None] | None = None,
        on_event: Callable[[CallEvent], None] | None = None,
        metronome: Metronome | None = None,
    ) -> CallSession:
        engine = CallEngine(
            turns,
            script,
            vad=voice.vad.new_stream(),
            vad_threshold=voice.vad.threshold,
            stt_enabled=voice.transcribes,
            judge_turns=voice.turn_judge is not None,
        )
        return cls(
            info, transport, voice, engine, clock=clock, on_turn=on_turn, on_event=on_event,
            metronome=metronome,
        )

    def post(self, event: EngineEvent) -> None:
        self._shell.post(event)

    async def run(self, line: Line) -> None:
        """Serve the call until it ends; ``line`` is the socket adapter's side of it."""
        shell, voice = self._shell, self._voice
        try:
            async with shell.owning(line):
                # The call's own TTS connection starts opening now, beside STT's.
                call_tts = _tts_for_call(voice.tts)
                if call_tts is not None:
                    self._tts = call_tts
                # Opened (and re-opened) in the background: the greeting does not wait
                # for the transcriber, and its faults reach the engine as events.
                stt = self._stt = SttLink(
                    voice.stt,
                    self.post,
                    delays_s=voice.retry_delays_s,
                    sleep=voice.sleep,
                    resend_s=voice.stt_resend_s,
                    final_timeout_s=voice.stt_final_timeout_s,
                    on_retry=self._on_retry,
                    speech=self.engine.speech,  # its silence sets the cadence
                )
                shell.spawn(stt.run())
                try:
                    self.engine.start(shell.clock.now())
                    await shell.loop(
                        self.engine,
                        self._execute,
                        vad=self.engine.turn.vad,
                        on_caller_audio=stt.push_audio,
                    )
                finally:
                    shell.cancel_tasks()
                    await stt.aclose()
        finally:
            if self._tts is not voice.tts:
                await _close_tts(self._tts)

    async def _execute(self, commands: list[Command]) -> None:
        shell = self._shell
        for command in commands:
            if type(command) is SendAudio:  # most of them while the bot talks: no match
                await self._transport.send_audio(command.ulaw)
                continue
            match command:
                case SendAudio() | SendMark() | SendClear() | Hangup() | RecordEvent():
                    await shell.send(command)
                case StartReply():
                    self._start_reply(command)
                case CancelReply(reply_id=rid):
                    await self._cancel_reply(rid)
                case FinalizeStt():
                    if self._stt is not None:
                        self._stt.finalize()
                case JudgeTurn():
                    self._judge_turn(command)
                case WarmUp():
                    warm_up(self._voice.llm)
                case Transfer(to=to):
                    log.info("call.transfer")
                    shell.spawn(self._transfer(to))
                case SpeakHold(hold_id=hold_id, text=text):
                    shell.spawn(self._speak_hold(hold_id, text))
                case RecordTurn(turn=turn):
                    if self._on_turn is not None:
                        self._on_turn(turn)

    def _start_reply(self, request: StartReply) -> None:
        voice = self._voice
        tts = voice.fallback_tts if request.kind is ReplyKind.APOLOGY else self._tts
        task = self._shell.spawn(
            run_reply(
                request,
                llm=voice.llm,
                tts=tts,
                tools=voice.tools,
                post=self.post,
                execute_tool=voice.execute_tool,
                retry_delays_s=voice.retry_delays_s,
                sleep=voice.sleep,
                on_retry=self._on_retry,
            )
        )
        self._replies[request.reply_id] = task
        task.add_done_callback(self._forget_reply)

    def _forget_reply(self, task: asyncio.Task[None]) -> None:
        for rid, known in list(self._replies.items()):
            if known is task:
                del self._replies[rid]

    async def _cancel_reply(self, reply_id: int) -> None:
        """Cancel and wait, so no vendor socket of this reply is left talking."""
        task = self._replies.pop(reply_id, None)
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CANCEL_WAIT_S):
                await asyncio.wait({task})

    async def _transfer(self, to: str) -> None:
        """Run the transfer beside the loop (a REST call may be slow) and report back:
        a failed one is told to the caller, never raised into the call's task group."""
        try:
            await self._transport.transfer(to)
        except Exception as exc:  # reported to the engine, which tells the caller
            log.warning("call.transfer_failed error=%r", exc)
            self.post(TransferFailed(str(exc) or repr(exc)))
        else:
            self.post(TransferDone())

    async def _speak_hold(self, hold_id: int, text: str) -> None:
        """The "one moment" line, from the fallback TTS (the main one may be what fails)."""
        try:
            async for chunk in self._voice.fallback_tts.synthesize(text):
                if chunk:
                    self.post(HoldAudio(hold_id, chunk))
        except Exception as exc:  # silence is the worst it can cause
            log.warning("call.hold_failed error=%r", exc)
        finally:
            self.post(HoldDone(hold_id))

    def _judge_turn(self, request: JudgeTurn) -> None:
        judge = self._voice.turn_judge
        if judge is not None:
            self._shell.spawn(_judge(judge, request, self.post))


def _tts_for_call(tts: TextToSpeech) -> TextToSpeech | None:
    return tts.for_call() if isinstance(tts, PerCallTextToSpeech) else None


async def _close_tts(tts: TextToSpeech) -> None:
    aclose = getattr(tts, "aclose", None)
    if aclose is not None:
        await aclose()


async def _judge(
    judge: TurnJudge, request: JudgeTurn, post: Callable[[EngineEvent], None]
) -> None:
    """The model's verdict goes to the inbox like any event; a failure leaves the lexical
    rule in charge of this silence."""
    try:
        probability = await judge.judge(request.pcm16)
    except Exception as exc:
        log.warning("end_of_turn.judge_failed error=%r", exc)
        return
    post(TurnJudged(request.run_id, probability))
