"""Builds the voice agent a server runs: the assistant file, its providers (loaded once,
at start-up) and the engine's call runner."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from dotenv import dotenv_values

from callbridge.assistant import AssistantConfig, build_assistant, load_assistant
from callbridge.engine.bridge import BridgeCore, BridgeOptions
from callbridge.engine.bridge_call import make_bridge_runner
from callbridge.engine.events import TurnRecord
from callbridge.engine.runner import CallStats, make_runner
from callbridge.engine.transport import CallInfo, CallRunner
from callbridge.providers import vapi
from callbridge.providers.base import TextToSpeech
from callbridge.providers.registry import build_provider, spec_for
from callbridge.providers.turn.smart_turn import load_smart_turn

__all__ = ["agent_env", "build_bridge_runner", "build_runner"]


def agent_env(env_file: Path = Path(".env")) -> dict[str, str]:
    """Provider keys and URLs: the process environment wins over ``.env``."""
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    values.update(os.environ)
    return values


def build_runner(
    assistant_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    on_turn: Callable[[CallInfo, TurnRecord], None] | None = None,
    on_end: Callable[[CallInfo, CallStats], None] | None = None,
) -> CallRunner:
    """``on_turn``/``on_end`` feed the call record (``server.call_log.CallLog``); the
    call's events go to its own ``CallInfo.emit``, which the socket adapter provides."""
    env = agent_env() if env is None else env
    config = load_assistant(assistant_path)
    # The apology after a provider failure must not depend on the provider that failed.
    espeak = spec_for("tts", "espeak")
    fallback = build_provider("tts", espeak.config.model_validate({"provider": "espeak"}), env)
    if config.engine == "vapi":
        return build_bridge_runner(config, env, fallback_tts=fallback, on_end=on_end)
    assistant = build_assistant(config, env)
    # The end-of-turn model is loaded here, at start-up, once for every call.
    judge = load_smart_turn() if config.turns().end_of_turn == "smart-turn" else None
    return make_runner(
        assistant, fallback_tts=fallback, turn_judge=judge, on_turn=on_turn, on_end=on_end
    )


def build_bridge_runner(
    config: AssistantConfig,
    env: Mapping[str, str],
    *,
    fallback_tts: TextToSpeech | None = None,
    on_end: Callable[[CallInfo, CallStats], None] | None = None,
) -> CallRunner:
    """``engine: vapi``: each call is bridged to a VAPI call (keys checked here, at start-up)."""
    block = vapi.VapiConfig.model_validate(config.vapi or {})
    turns = config.turns()
    options = BridgeOptions(
        send_ahead_ms=turns.send_ahead_ms,
        playout_max_s=turns.playout_max_s,
        hangup_mark_timeout_s=turns.hangup_mark_timeout_s,
        clear_on_user_speech=block.clear_on_user_speech,
    )

    def ended(info: CallInfo, core: BridgeCore) -> None:
        if on_end is not None:  # VAPI keeps the turns; the line's counters are ours
            stats = CallStats(barge_ins=core.clears, stale_interrupts=0,
                              dropped_frames=core.playout.dropped_frames)
            on_end(info, stats)

    return make_bridge_runner(
        vapi.build(block, env),
        options,
        apology_tts=fallback_tts,
        apology_message=config.spoken_apology,
        on_end=ended,
    )
