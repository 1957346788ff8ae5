"""Builds the ``CallRunner`` the server hands each Media Streams socket to."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callbridge.assistant import BuiltAssistant, TurnTaking
from callbridge.engine.actions import with_configured_actions
from callbridge.engine.config import Script, TurnRules
from callbridge.engine.events import TurnRecord
from callbridge.engine.session import CallSession, Voice
from callbridge.engine.transport import CallInfo, CallRunner, CallTransport, Line
from callbridge.engine.warm import warm_up
from callbridge.providers.base import TextToSpeech, ToolCall, TurnJudge

__all__ = ["CallStats", "make_runner", "script_for", "turn_rules"]

log = logging.getLogger(__name__)


def script_for(assistant: BuiltAssistant) -> Script:
    config = assistant.config
    faults = config.faults
    # The model's provider knows how its block spells instructions (systemPrompt,
    # VAPI's messages list); fall back to the plain field.
    prompt = getattr(assistant.llm, "system_prompt", None) or config.model.get("systemPrompt")
    return Script(
        first_message=config.first_message,
        end_call_message=config.end_call_message,
        idle_message=config.idle_message,
        apology_message=config.spoken_apology,
        system_prompt=prompt if isinstance(prompt, str) else None,
        hold_message=faults.hold_message,
        hold_after_s=faults.hold_after_s,
        transfer_failed_message=faults.transfer_failed_message,
    )


def turn_rules(turns: TurnTaking) -> TurnRules:
    """The validated ``turnTaking`` block as the engine's plain rules (same field names)."""
    return TurnRules(**turns.model_dump())


def _tools_of(llm: object) -> dict[str, Any]:
    """Models with a toolset offer its tools and run the user-defined ones."""
    toolset = getattr(llm, "toolset", None)
    if toolset is None:
        return {}

    async def execute(call: ToolCall) -> str:
        result = await toolset.execute(call)
        return str(result.content)

    return {"tools": tuple(toolset.specs), "execute_tool": execute}


def _stt_final_timeout_s(assistant: BuiltAssistant) -> float:
    configured = assistant.config.faults.stt_final_timeout_s
    if configured is not None:
        return configured
    return max(0.25, 0.75 * assistant.config.turns().stt_timeout_ms / 1000)


@dataclass(frozen=True, slots=True)
class CallStats:
    """The engine's counters for one call, reported once when the call is over."""

    barge_ins: int
    stale_interrupts: int
    dropped_frames: int


def make_runner(
    assistant: BuiltAssistant,
    *,
    fallback_tts: TextToSpeech | None = None,
    turn_judge: TurnJudge | None = None,
    on_turn: Callable[[CallInfo, TurnRecord], None] | None = None,
    on_end: Callable[[CallInfo, CallStats], None] | None = None,
) -> CallRunner:
    """The engine's runner; its call events go to the call's own ``info.emit``."""
    voice = Voice(
        vad=assistant.vad,
        stt=assistant.stt,
        llm=with_configured_actions(assistant.llm),
        tts=assistant.tts,
        fallback_tts=fallback_tts,
        retry_delays_s=assistant.config.faults.retry_delays_s,
        stt_resend_s=assistant.config.faults.stt_resend_s,
        stt_final_timeout_s=_stt_final_timeout_s(assistant),
        turn_judge=turn_judge,
        **_tools_of(assistant.llm),
    )
    script = script_for(assistant)
    turns = turn_rules(assistant.config.turns())

    async def run(info: CallInfo, transport: CallTransport, line: Line) -> None:
        warm_up(assistant.llm)
        def record(turn: TurnRecord) -> None:
            log.info(
                "turn role=%s interrupted=%s latency_ms=%s",
                turn.role,
                turn.interrupted,
                {k: round(v) for k, v in turn.latency_ms.items()},
            )
            if on_turn is not None:
                on_turn(info, turn)

        session = CallSession.create(
            info, transport, voice, turns, script, on_turn=record, on_event=info.emit
        )
        try:
            await session.run(line)
        finally:
            if on_end is not None:
                engine = session.engine
                on_end(
                    info,
                    CallStats(
                        barge_ins=engine.barge_ins,
                        stale_interrupts=engine.stale_interrupts,
                        dropped_frames=engine.playout.dropped_frames,
                    ),
                )

    return run

