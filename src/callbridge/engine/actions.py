"""The model's built-in actions, carried out as the assistant configured them.

``transfer_call`` is offered to the model without parameters: the number to dial is the
assistant's ``transferNumber``, never one a model writes (it could be talked into any).
So between the model and the reply pipeline, each built-in call is handed to the model's
toolset, which fills in the configured arguments or refuses the call; the engine then
sees ``transfer_call`` with ``{"to": <configured number>}``, or nothing at all.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from callbridge.engine.reply import BUILTIN_ACTIONS
from callbridge.providers.base import LanguageModel, LlmEvent, Message, ToolCall, ToolSpec

__all__ = ["ActionPolicy", "ConfiguredActions", "with_configured_actions"]

log = logging.getLogger(__name__)


class ActionPolicy(Protocol):
    """What a model's toolset allows (``providers.llm.tools.Toolset``)."""

    def resolve_action(self, call: ToolCall) -> ToolCall | None: ...


class ConfiguredActions:
    """A ``LanguageModel`` whose built-in tool calls went through ``policy``."""

    def __init__(self, llm: LanguageModel, policy: ActionPolicy) -> None:
        self.name = llm.name
        self.inner = llm
        self._policy = policy

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        events = self.inner.stream(messages, tools)
        try:
            async for event in events:
                if isinstance(event, ToolCall) and event.name in BUILTIN_ACTIONS:
                    resolved = self._policy.resolve_action(event)
                    if resolved is None:
                        log.warning("reply.action_refused name=%s", event.name)
                        continue
                    event = resolved
                yield event
        finally:
            # Close the vendor's stream now (on cancel too), not when it is collected.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()


def with_configured_actions(llm: LanguageModel) -> LanguageModel:
    """``llm`` itself when it has no toolset (a scripted agent's actions are its own)."""
    policy = getattr(llm, "toolset", None)
    if policy is None or not hasattr(policy, "resolve_action"):
        return llm
    return ConfiguredActions(llm, policy)
