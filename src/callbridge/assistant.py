"""The assistant file a user writes: VAPI-shaped YAML/JSON, validated with pydantic.

Errors name the field and the line of the file it came from, because the person who
reads them is editing that file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from callbridge.errors import ConfigError
from callbridge.providers.registry import Kind, ProviderBlock, build_provider, spec_for

__all__ = [
    "AssistantConfig",
    "BuiltAssistant",
    "FaultHandling",
    "TurnTaking",
    "build_assistant",
    "load_assistant",
]


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class TurnTaking(_Camel):
    """Thresholds for listening, endpointing and barge-in (defaults: DESIGN.md §3)."""

    start_ms: int = Field(200, ge=20, le=5000)
    endpointing_ms: int = Field(500, ge=100, le=10000)
    # Start the reply after this much silence, unheard until the endpoint confirms the
    # turn (then it plays at once) and dropped if the caller goes on; 0 turns it off.
    speculate_ms: int = Field(200, ge=0, le=10000)
    # With a transcriber: when the caller's words read as a finished sentence
    # (engine/turn_end.py), this much silence ends the turn; "off" always waits
    # endpointingMs.
    # "smart-turn": the Smart Turn model (if installed) also hears each silence and can
    # keep a turn open that reads finished but sounds unfinished; never closes one early.
    end_of_turn: Literal["lexical", "smart-turn", "off"] = "lexical"
    quick_endpointing_ms: int = Field(250, ge=100, le=10000)
    stt_timeout_ms: int = Field(1000, ge=0, le=10000)
    interrupt_min_ms: int = Field(200, ge=20, le=5000)
    interrupt_min_words: int = Field(1, ge=0, le=20)
    interrupt_max_lag_ms: int = Field(1000, ge=100, le=10000)
    idle_timeout_s: float = Field(8.0, gt=0, le=600)
    idle_max_reprompts: int = Field(2, ge=0, le=20)
    max_duration_s: float = Field(600.0, gt=0, le=4 * 3600)
    send_ahead_ms: int = Field(200, ge=20, le=2000)
    playout_max_s: float = Field(120.0, gt=0, le=3600)
    hangup_mark_timeout_s: float = Field(10.0, gt=0, le=120)


class FaultHandling(_Camel):
    """What a call does while a vendor fails (README "When things fail")."""

    # The retry policy of every provider call (DESIGN.md §3): one wait per retry.
    retry_delays_s: tuple[float, ...] = Field((1.0, 2.0, 4.0), max_length=8)
    # Silence a caller may wait while retries run before hearing ``holdMessage``
    # (fallback TTS); null turns the line off.
    hold_after_s: float = Field(3.0, gt=0, le=60)
    hold_message: str | None = "One moment, please."
    transfer_failed_message: str | None = (
        "Sorry, I couldn't transfer your call. I can keep helping you here."
    )
    # Caller audio kept since the transcriber's last final, re-sent after a reconnect.
    stt_resend_s: float = Field(5.0, ge=0.2, le=30)
    # A transcriber that owes a final this long after Finalize is stalled: reconnect
    # (with the audio re-sent). Default: 3/4 of turnTaking.sttTimeoutMs, so the words
    # are rescued before the turn would be answered without them.
    stt_final_timeout_s: float | None = Field(None, gt=0, le=60)


class AssistantConfig(_Camel):
    name: str = "assistant"
    # ``vapi``: a VAPI assistant serves the call (bridge mode) and the ``vapi`` block says
    # which; model/voice/transcriber are then not used.
    engine: Literal["pipeline", "vapi"] = "pipeline"
    vapi: dict[str, Any] | None = None
    first_message: str | None = None
    end_call_message: str | None = "Goodbye."
    idle_message: str = "Are you still there?"
    apology_message: str = "Sorry, I'm having trouble right now. Please call again later."
    # Said (fallback TTS) before hanging up when a vendor cannot be repaired; wins over
    # apologyMessage (endCallMessage-style name).
    error_message: str | None = None
    faults: FaultHandling = Field(default_factory=lambda: FaultHandling.model_validate({}))
    recording_enabled: bool = False
    model: dict[str, Any] = Field(default_factory=dict)  # required by the pipeline engine
    voice: dict[str, Any] = Field(default_factory=lambda: {"provider": "espeak"})
    transcriber: dict[str, Any] = Field(default_factory=lambda: {"provider": "none"})
    vad: dict[str, Any] = Field(default_factory=lambda: {"provider": "silero"})
    turn_taking: TurnTaking = Field(default_factory=lambda: TurnTaking.model_validate({}))
    max_duration_seconds: float | None = Field(None, gt=0)

    @property
    def spoken_apology(self) -> str:
        return self.error_message or self.apology_message

    def turns(self) -> TurnTaking:
        """``maxDurationSeconds`` (VAPI's name) wins over ``turnTaking.maxDurationS``."""
        if self.max_duration_seconds is None:
            return self.turn_taking
        return self.turn_taking.model_copy(update={"max_duration_s": self.max_duration_seconds})


_BLOCKS: tuple[tuple[str, Kind], ...] = (
    ("vad", "vad"),
    ("transcriber", "stt"),
    ("model", "llm"),
    ("voice", "tts"),
)


@dataclass(frozen=True)
class BuiltAssistant:
    """A validated config plus its provider objects, built once at start-up."""

    config: AssistantConfig
    vad: Any
    stt: Any
    llm: Any
    tts: Any


def load_assistant(path: str | Path) -> AssistantConfig:
    """Read and validate an assistant file; raise ``ConfigError`` naming field and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read assistant file {path}: {exc.strerror}") from exc
    return parse_assistant(text, source=str(path))


def parse_assistant(text: str, *, source: str = "<assistant>") -> AssistantConfig:
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        config = AssistantConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, root, source, ())) from exc
    if config.engine == "vapi":
        _check_vapi_block(config, root, source)
        return config
    for key, kind in _BLOCKS:
        block = getattr(config, "model" if key == "model" else key)
        name = block.get("provider")
        if not isinstance(name, str):
            line = _line_of(root, (_camel_key(key),))
            raise ConfigError(f"{source}:{line}: {key}.provider: a provider name is required")
        try:
            spec_for(kind, name).config.model_validate(block)
        except ConfigError as exc:
            line = _line_of(root, (_camel_key(key), "provider"))
            raise ConfigError(f"{source}:{line}: {key}.provider: {exc}") from exc
        except ValidationError as exc:
            raise ConfigError(_describe(exc, root, source, (_camel_key(key),))) from exc
    return config


def _check_vapi_block(config: AssistantConfig, root: yaml.Node | None, source: str) -> None:
    from callbridge.providers.vapi import VapiConfig  # only bridge-mode files pay the import

    if config.vapi is None:
        line = _line_of(root, ("engine",))
        raise ConfigError(f"{source}:{line}: vapi: a vapi block is required with engine: vapi")
    try:
        VapiConfig.model_validate(config.vapi)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, root, source, ("vapi",))) from exc


def build_assistant(config: AssistantConfig, env: Mapping[str, str]) -> BuiltAssistant:
    """Build every provider once (models load here, at start-up, never mid-call)."""
    built: dict[str, Any] = {}
    for key, kind in _BLOCKS:
        raw = config.model if key == "model" else getattr(config, key)
        block: ProviderBlock = spec_for(kind, raw["provider"]).config.model_validate(raw)
        built[kind] = build_provider(kind, block, env)
    return BuiltAssistant(
        config=config, vad=built["vad"], stt=built["stt"], llm=built["llm"], tts=built["tts"]
    )


def _camel_key(key: str) -> str:
    return to_camel(key)


def _describe(
    exc: ValidationError, root: yaml.Node | None, source: str, prefix: tuple[str | int, ...]
) -> str:
    lines = []
    for error in exc.errors():
        loc = prefix + tuple(error["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        lines.append(f"{source}:{_line_of(root, loc)}: {dotted}: {error['msg']}")
    return "\n".join(lines)


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int:
    """1-based line of the deepest node on ``loc`` that exists in the file."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
