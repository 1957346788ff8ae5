"""What the engine is told, as plain frozen data: the turn-taking thresholds and the
fixed lines the bot says.

The assistant file is parsed and validated by the config layer (``assistant.py``,
pydantic, camelCase keys); ``runner.py`` turns its ``TurnTaking`` into ``TurnRules``
where the runner is built, so the engine depends on no config library and its tests
can build rules directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Script", "TurnRules"]


@dataclass(frozen=True, slots=True)
class TurnRules:
    """Thresholds for listening, endpointing and barge-in (meanings: README
    "Turn-taking"; the defaults are the assistant file's)."""

    start_ms: int = 200
    endpointing_ms: int = 500
    speculate_ms: int = 200
    end_of_turn: Literal["lexical", "smart-turn", "off"] = "lexical"
    quick_endpointing_ms: int = 250
    stt_timeout_ms: int = 1000
    interrupt_min_ms: int = 200
    interrupt_min_words: int = 1
    interrupt_max_lag_ms: int = 1000
    language: str = "en"
    backchannels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    backchannel_max_ms: int = 800
    false_interruption_ms: int = 1000
    resume_message: str | None = None
    idle_timeout_s: float = 8.0
    idle_max_reprompts: int = 2
    max_duration_s: float = 600.0
    send_ahead_ms: int = 200
    playout_max_s: float = 120.0
    hangup_mark_timeout_s: float = 10.0


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
