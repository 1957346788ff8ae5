"""The model's built-in actions pass through the toolset's policy before the engine sees
them: the configured transfer number replaces whatever the model wrote, refused actions
vanish, everything else is untouched, and the vendor's stream is closed with ours."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from callbridge.engine.actions import ConfiguredActions, with_configured_actions
from callbridge.providers.base import LlmEvent, Message, TextDelta, ToolCall, ToolSpec
from callbridge.providers.llm.tools import Toolset


class Model:
    name = "test-model"

    def __init__(self, events: list[LlmEvent], toolset: Toolset | None = None) -> None:
        self.events = events
        self.closed = 0
        if toolset is not None:
            self.toolset = toolset

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        try:
            for event in self.events:
                yield event
        finally:
            self.closed += 1


async def _all(model: object) -> list[LlmEvent]:
    stream = model.stream([], [])  # type: ignore[attr-defined]
    return [event async for event in stream]


async def test_transfer_gets_the_configured_number_and_other_events_pass() -> None:
    events: list[LlmEvent] = [
        TextDelta("One moment."),
        ToolCall("u1", "check_bill", '{"account": "7"}'),
        ToolCall("t1", "transfer_call", '{"to": "+19005550199"}'),
    ]
    toolset = Toolset(transfer_number="+15555550100")
    model = Model(events, toolset)
    wrapped = with_configured_actions(model)
    assert isinstance(wrapped, ConfiguredActions) and wrapped.name == "test-model"
    assert await _all(wrapped) == [
        TextDelta("One moment."),
        ToolCall("u1", "check_bill", '{"account": "7"}'),
        ToolCall("t1", "transfer_call", '{"to": "+15555550100"}'),
    ]
    await toolset.aclose()


async def test_actions_the_assistant_does_not_allow_are_dropped() -> None:
    toolset = Toolset(end_call=False)  # no transfer number either
    model = Model([ToolCall("t1", "transfer_call", '{"to": "+1555"}'),
                   ToolCall("e1", "end_call"), TextDelta("Sure.")], toolset)
    assert await _all(with_configured_actions(model)) == [TextDelta("Sure.")]
    await toolset.aclose()


async def test_a_model_without_a_toolset_is_left_alone() -> None:
    model = Model([ToolCall("t1", "transfer_call", '{"to": "+15550001"}')])
    assert with_configured_actions(model) is model  # type: ignore[arg-type]


async def test_closing_early_closes_the_vendor_stream() -> None:
    toolset = Toolset()
    model = Model([TextDelta("a"), TextDelta("b")], toolset)
    stream = with_configured_actions(model).stream([], [])
    assert await anext(stream) == TextDelta("a")
    await stream.aclose()  # type: ignore[attr-defined]
    assert model.closed == 1
    await toolset.aclose()
