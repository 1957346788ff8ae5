"""Maps the assistant file's ``provider:`` names to the classes that implement them.

Each provider module exports ``SPEC``: its config model (the fields of its block in the
assistant file) and a ``build`` function called once at start-up. Modules are imported
only when an assistant names them, so a missing optional dependency of one provider
never breaks another.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from callbridge.errors import ConfigError

__all__ = ["Kind", "ProviderBlock", "ProviderSpec", "build_provider", "known_names", "spec_for"]

Kind = Literal["vad", "stt", "llm", "tts"]


class ProviderBlock(BaseModel):
    """Base for every provider's block in the assistant file (VAPI-style camelCase)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    provider: str


@dataclass(frozen=True)
class ProviderSpec:
    """``build(block, env)`` turns a validated block into the provider object.

    ``env`` is the process environment merged with ``.env``; keys are read from it only,
    and a missing key raises ``ConfigError`` naming the variable (at start-up, not mid-call).
    """

    kind: Kind
    name: str
    config: type[ProviderBlock]
    build: Callable[[Any, Mapping[str, str]], Any]


# (kind, name) -> "module:attribute" of a ProviderSpec.
_TABLE: dict[tuple[Kind, str], str] = {
    ("vad", "silero"): "callbridge.providers.vad.silero:SPEC",
    ("vad", "webrtc"): "callbridge.providers.vad.webrtc:SPEC",
    ("vad", "fake"): "callbridge.providers.fake:VAD_SPEC",
    ("stt", "none"): "callbridge.providers.stt.none:SPEC",
    ("stt", "deepgram"): "callbridge.providers.stt.deepgram:SPEC",
    ("stt", "openai-compatible"): "callbridge.providers.stt.openai_compatible:SPEC",
    ("stt", "fake"): "callbridge.providers.fake:STT_SPEC",
    ("llm", "scripted"): "callbridge.providers.llm.scripted:SPEC",
    ("llm", "openai"): "callbridge.providers.llm.openai:SPEC",
    ("llm", "openai-compatible"): "callbridge.providers.llm.openai:COMPATIBLE_SPEC",
    ("llm", "anthropic"): "callbridge.providers.llm.anthropic:SPEC",
    ("llm", "fake"): "callbridge.providers.fake:LLM_SPEC",
    ("tts", "espeak"): "callbridge.providers.tts.espeak:SPEC",
    ("tts", "11labs"): "callbridge.providers.tts.elevenlabs:SPEC",
    ("tts", "openai-compatible"): "callbridge.providers.tts.openai_compatible:SPEC",
    ("tts", "fake"): "callbridge.providers.fake:TTS_SPEC",
}


def known_names(kind: Kind) -> list[str]:
    return sorted(name for k, name in _TABLE if k == kind)


def spec_for(kind: Kind, name: str) -> ProviderSpec:
    try:
        target = _TABLE[(kind, name)]
    except KeyError:
        raise ConfigError(
            f"unknown {kind} provider {name!r}; expected one of {', '.join(known_names(kind))}"
        ) from None
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{kind} provider {name!r} is not available: {exc}") from exc
    spec = getattr(module, attribute)
    assert isinstance(spec, ProviderSpec)
    return spec


def build_provider(kind: Kind, block: ProviderBlock, env: Mapping[str, str]) -> Any:
    return spec_for(kind, block.provider).build(block, env)
