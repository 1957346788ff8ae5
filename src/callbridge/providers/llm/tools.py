"""The tools an LLM may call during a call, and their executor.

Two are built in: ``end_call`` (the model decides the conversation is over) and
``transfer_call`` (to the number in the model block). User tools are declared in the
assistant file with a JSON schema and a URL; calling one POSTs the model's JSON arguments
to that URL and hands the answer back to the model, which speaks it. A failing user tool
is reported to the model as text rather than raised: the caller should hear "I couldn't
look that up", not an apology and a hang-up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from callbridge.errors import ConfigError
from callbridge.providers.base import ToolCall, ToolSpec

__all__ = [
    "END_CALL",
    "TRANSFER_CALL",
    "PromptMessage",
    "ToolDefinition",
    "ToolFields",
    "ToolResult",
    "Toolset",
    "build_toolset",
]

log = logging.getLogger(__name__)

END_CALL: Final = "end_call"
TRANSFER_CALL: Final = "transfer_call"
_MAX_RESULT_CHARS: Final = 4000  # a tool's answer goes into the context; keep it bounded


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ToolDefinition(_Camel):
    """A user tool in the assistant file: ``{name, description, parameters, url}``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(10.0, gt=0, le=60)

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, name: str) -> str:
        if name in (END_CALL, TRANSFER_CALL):
            raise ValueError(f"{name!r} is a built-in tool name")
        return name


class PromptMessage(_Camel):
    """VAPI's ``model.messages`` entries (usually the system prompt)."""

    role: Literal["system", "user", "assistant"]
    content: str


class ToolFields(_Camel):
    """Model-block fields shared by every LLM provider (VAPI's names where it has one)."""

    system_prompt: str | None = None
    messages: tuple[PromptMessage, ...] = ()
    tools: tuple[ToolDefinition, ...] = ()
    end_call_function_enabled: bool = True
    transfer_number: str | None = Field(None, pattern=r"^\+?[0-9A-Za-z:@._-]{3,64}$")

    def prompt(self) -> str | None:
        """The system prompt: ``systemPrompt`` plus any system entries of ``messages``."""
        parts = [self.system_prompt or ""]
        parts += [m.content for m in self.messages if m.role == "system"]
        text = "\n\n".join(p for p in parts if p.strip())
        return text or None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What executing a tool call produced.

    ``content`` goes back to the model as the tool message. ``action`` tells the engine
    what to do to the call itself: nothing, hang up, or transfer to ``transfer_to``.
    """

    call_id: str
    content: str
    action: Literal["none", "end_call", "transfer"] = "none"
    transfer_to: str | None = None
    is_error: bool = False


class Toolset:
    """The tool list offered to the model and the executor for its calls."""

    def __init__(
        self,
        user_tools: Sequence[ToolDefinition] = (),
        *,
        end_call: bool = True,
        transfer_number: str | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._user = {tool.name: tool for tool in user_tools}
        if len(self._user) != len(user_tools):
            raise ConfigError("tools: two tools have the same name")
        self._end_call = end_call
        self._transfer_number = transfer_number
        self._http = http or httpx.AsyncClient()
        specs: list[ToolSpec] = []
        if end_call:
            specs.append(ToolSpec(
                END_CALL,
                "Hang up the phone call. Use when the caller says goodbye or the "
                "conversation is complete.",
                {"type": "object", "properties": {}},
            ))
        if transfer_number:
            specs.append(ToolSpec(
                TRANSFER_CALL,
                "Transfer the caller to a human agent.",
                {"type": "object", "properties": {}},
            ))
        specs += [ToolSpec(t.name, t.description, t.parameters) for t in user_tools]
        self.specs: tuple[ToolSpec, ...] = tuple(specs)

    async def execute(self, call: ToolCall) -> ToolResult:
        if call.name == END_CALL and self._end_call:
            return ToolResult(call.id, "The call is ending.", action="end_call")
        if call.name == TRANSFER_CALL and self._transfer_number:
            return ToolResult(
                call.id, "Transferring the caller.", action="transfer",
                transfer_to=self._transfer_number,
            )
        tool = self._user.get(call.name)
        if tool is None:
            return ToolResult(call.id, f"Error: there is no tool named {call.name!r}.",
                              is_error=True)
        return await self._post(tool, call)

    def resolve_action(self, call: ToolCall) -> ToolCall | None:
        """A built-in call as the engine must carry it out, or ``None`` if not allowed.

        ``transfer_call`` is offered without parameters, so the model names no number:
        the configured ``transferNumber`` is filled in here, and anything the model put
        in its arguments is ignored (a model must never pick what we dial).
        """
        if call.name == END_CALL:
            return call if self._end_call else None
        if call.name == TRANSFER_CALL and self._transfer_number:
            if call.arguments.strip() not in ("", "{}"):
                log.warning("tool.transfer_arguments_ignored")
            return ToolCall(call.id, TRANSFER_CALL, json.dumps({"to": self._transfer_number}))
        log.warning("tool.builtin_refused name=%s", call.name)
        return None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, tool: ToolDefinition, call: ToolCall) -> ToolResult:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            return ToolResult(call.id, "Error: the arguments were not valid JSON.", is_error=True)
        if not isinstance(arguments, dict):
            return ToolResult(call.id, "Error: the arguments must be a JSON object.",
                              is_error=True)
        try:
            response = await self._http.post(tool.url, json=arguments, timeout=tool.timeout_s)
        except httpx.HTTPError as exc:
            log.warning("tool.failed name=%s error=%r", tool.name, exc)
            return ToolResult(call.id, f"Error: the {tool.name} service did not answer.",
                              is_error=True)
        if response.is_error:
            log.warning("tool.failed name=%s status=%d", tool.name, response.status_code)
            return ToolResult(
                call.id, f"Error: the {tool.name} service failed (HTTP {response.status_code}).",
                is_error=True,
            )
        return ToolResult(call.id, _result_text(response))


def _result_text(response: httpx.Response) -> str:
    """A JSON ``{"result": …}`` gives its result; anything else is passed on as text."""
    text = response.text
    if "json" in response.headers.get("content-type", ""):
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and "result" in data:
            result = data["result"]
            text = result if isinstance(result, str) else json.dumps(result)
    return text.strip()[:_MAX_RESULT_CHARS]


def build_toolset(fields: ToolFields, http: httpx.AsyncClient | None = None) -> Toolset:
    return Toolset(
        fields.tools,
        end_call=fields.end_call_function_enabled,
        transfer_number=fields.transfer_number,
        http=http,
    )
