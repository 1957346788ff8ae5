"""What a fake LLM answers, independent of the vendor's wire format.

``FakeOpenAI`` and ``FakeAnthropic`` render the same script in their own streaming
shapes, so one scenario can run against either vendor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScriptedToolCall:
    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None
    fragments: int = 3  # the argument JSON is streamed in this many pieces

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)

    def pieces(self) -> list[str]:
        text = self.arguments_json()
        size = max(1, -(-len(text) // max(1, self.fragments)))
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]


@dataclass(frozen=True)
class Reply:
    """One streamed answer: text deltas, then tool calls.

    ``first_token_delay_s`` models the vendor's time to first token; ``drop_after`` closes
    the connection after that many streamed events without the proper end, and
    ``stall_after`` stops sending (the connection stays open) after that many events.
    """

    text: Sequence[str] = ()
    tool_calls: Sequence[ScriptedToolCall] = ()
    first_token_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    drop_after: int | None = None
    stall_after: int | None = None
    error_event_after: int | None = None
    malformed_after: int | None = None  # then an event whose data is not JSON, and the end


@dataclass(frozen=True)
class Failure:
    """An HTTP error answer instead of a stream (429, 500, 401, …), or a hang."""

    status: int = 500
    message: str = "The server had an error while processing your request."
    kind: str | None = None  # the vendor's error type; a sensible one per status if None
    code: str | None = None  # OpenAI's error code (e.g. insufficient_quota); per status if None
    hang: bool = False  # never answer at all (models a vendor that accepted and went quiet)


Script = Sequence[Reply | Failure] | Callable[[Mapping[str, Any]], Reply | Failure]


class ScriptCursor:
    """Hands out one scripted answer per request; the last one repeats."""

    def __init__(self, script: Script, default: Reply) -> None:
        self._script = script
        self._default = default
        self._index = 0

    def next(self, request: Mapping[str, Any]) -> Reply | Failure:
        if callable(self._script):
            return self._script(request)
        if not self._script:
            return self._default
        answer = self._script[min(self._index, len(self._script) - 1)]
        self._index += 1
        return answer
