"""A keyless, deterministic "LLM": an IVR menu of intents matched by keypad or keyword.

It serves two purposes: a phone menu that runs on a bare machine (with the ``none`` STT
only keypad digits and "the caller said something" reach it, hence ``noSpeechReply``),
and every test that needs a model whose reply is known in advance. It streams its reply
in a few word-boundary pieces so the engine's sentence splitter does real work, then
the intent's action as the same tool call a real model would make.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from callbridge.providers.base import LlmEvent, Message, TextDelta, ToolCall, ToolSpec
from callbridge.providers.registry import ProviderBlock, ProviderSpec

__all__ = ["END_CALL", "SPEC", "TRANSFER_CALL", "Intent", "ScriptedAgent", "ScriptedBlock"]

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"
WORDS_PER_DELTA = 3

_E164 = r"^\+[1-9][0-9]{1,14}$"


class Intent(BaseModel):
    """One menu entry: how the caller picks it, what the bot says, what it then does."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    name: str = Field(min_length=1)
    keywords: tuple[str, ...] = ()
    dtmf: str | None = Field(None, pattern=r"^[0-9*#]+$")
    reply: str = Field(min_length=1)
    action: Literal["none", "hangup", "transfer"] = "none"
    transfer_to: str | None = Field(None, pattern=_E164)

    @field_validator("dtmf", mode="before")
    @classmethod
    def _digits_as_text(cls, value: Any) -> Any:
        """``dtmf: 1`` in YAML is an int; the caller pressed the key "1"."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("keywords")
    @classmethod
    def _no_blank_keywords(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not word.strip() for word in value):
            raise ValueError("keywords must not be blank")
        return tuple(word.strip() for word in value)

    @model_validator(mode="after")
    def _consistent(self) -> Intent:
        if self.dtmf is None and not self.keywords:
            raise ValueError(
                f"intent {self.name!r} needs dtmf or keywords, else nothing selects it"
            )
        if self.action == "transfer" and self.transfer_to is None:
            raise ValueError("action 'transfer' needs transferTo (E.164, e.g. +15551234567)")
        if self.action != "transfer" and self.transfer_to is not None:
            raise ValueError("transferTo is only used with action 'transfer'")
        return self


class ScriptedBlock(ProviderBlock):
    """``model: {provider: scripted, intents: [...], fallback: ..., noSpeechReply: ...}``."""

    model_config = ConfigDict(alias_generator=to_camel)

    provider: Literal["scripted"] = "scripted"
    intents: tuple[Intent, ...] = ()
    fallback: str = Field("Sorry, I didn't catch that. Could you say it again?", min_length=1)
    no_speech_reply: str = Field(
        "Sorry, I can't understand speech on this line. Please use your keypad.", min_length=1
    )
    system_prompt: str | None = None  # accepted so VAPI-style files validate; unused

    @model_validator(mode="after")
    def _unique(self) -> ScriptedBlock:
        names = [intent.name for intent in self.intents]
        digits = [intent.dtmf for intent in self.intents if intent.dtmf is not None]
        for label, values in (("name", names), ("dtmf", digits)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"intent {label} used more than once: {', '.join(repeated)}")
        return self


class ScriptedAgent:
    """The ``LanguageModel``: reads only the last user message; no state between calls."""

    name = "scripted"

    def __init__(self, block: ScriptedBlock) -> None:
        self.block = block
        self._patterns = [
            (intent, [_whole_word(k) for k in intent.keywords]) for intent in block.intents
        ]

    def choose(self, message: Message | None) -> Intent | None:
        """The intent the message selects; ``None`` means fallback or no-speech reply."""
        if message is None:
            return None
        if message.dtmf:
            return next((i for i in self.block.intents if i.dtmf == message.dtmf), None)
        for intent, patterns in self._patterns:
            if any(p.search(message.content) for p in patterns):
                return intent
        return None

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncGenerator[LlmEvent, None]:
        last = next((m for m in reversed(messages) if m.role == "user"), None)
        intent = self.choose(last)
        if intent is not None:
            reply = intent.reply
        elif last is not None and not last.dtmf and not last.content.strip():
            reply = self.block.no_speech_reply
        else:
            reply = self.block.fallback
        for piece in _pieces(reply):
            yield TextDelta(piece)
        if intent is not None and intent.action == "hangup":
            yield ToolCall("call_1", END_CALL, "{}")
        elif intent is not None and intent.action == "transfer":
            yield ToolCall("call_1", TRANSFER_CALL, json.dumps({"to": intent.transfer_to}))


def _whole_word(keyword: str) -> re.Pattern[str]:
    """Case-insensitive whole-word match; inner spaces match any run of whitespace."""
    body = r"\s+".join(re.escape(part) for part in keyword.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def _pieces(text: str) -> list[str]:
    """Split at word boundaries, a few words each, keeping every character of ``text``."""
    words = re.findall(r"\S+\s*", text)
    leading = text[: len(text) - len(text.lstrip())]
    pieces = [
        "".join(words[i : i + WORDS_PER_DELTA]) for i in range(0, len(words), WORDS_PER_DELTA)
    ]
    if pieces and leading:
        pieces[0] = leading + pieces[0]
    return pieces


def _build(block: ScriptedBlock, env: Mapping[str, str]) -> ScriptedAgent:
    return ScriptedAgent(block)


SPEC = ProviderSpec(kind="llm", name="scripted", config=ScriptedBlock, build=_build)
