"""The tool executor: built-in end_call / transfer_call and user tools POSTed over HTTP."""

from __future__ import annotations

import json
from typing import Any

from fakes._http import HttpFake
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from callbridge.providers.base import ToolCall
from callbridge.providers.llm.tools import ToolDefinition, Toolset


class FakeToolServer(HttpFake):
    """A user's tool endpoint on 127.0.0.1 (records what it was sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[str, Any, str]] = []

    def app(self) -> ASGIApp:
        return Starlette(routes=[Route("/{name}", self._tool, methods=["POST"])])

    async def _tool(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = json.loads(await request.body())
        self.received.append((name, body, request.headers.get("content-type", "")))
        if name == "bill":
            return JSONResponse({"result": f"Account {body['account']} owes $20."})
        if name == "plain":
            return PlainTextResponse("  It is sunny.  ")
        if name == "structured":
            return JSONResponse({"result": {"balance": 20}})
        if name == "slow":
            await self.release.wait()
        return JSONResponse({"error": "boom"}, status_code=500)


def tool(server: FakeToolServer, name: str, **extra: Any) -> ToolDefinition:
    url = f"{server.base_url}/{name}"
    return ToolDefinition.model_validate({"name": name, "url": url, **extra})


async def test_builtins_only_when_configured() -> None:
    assert [s.name for s in Toolset().specs] == ["end_call"]
    assert [s.name for s in Toolset(end_call=False).specs] == []
    with_transfer = Toolset(transfer_number="+15550100")
    assert [s.name for s in with_transfer.specs] == ["end_call", "transfer_call"]

    ended = await with_transfer.execute(ToolCall("c1", "end_call"))
    moved = await with_transfer.execute(ToolCall("c2", "transfer_call"))
    assert (ended.action, ended.call_id) == ("end_call", "c1")
    assert (moved.action, moved.transfer_to) == ("transfer", "+15550100")
    refused = await Toolset().execute(ToolCall("c3", "transfer_call"))
    assert refused.is_error and refused.action == "none"
    await with_transfer.aclose()


async def test_user_tool_posts_the_arguments_and_returns_the_result() -> None:
    async with FakeToolServer() as server:
        toolset = Toolset([tool(server, "bill"), tool(server, "plain"), tool(server, "structured")])
        bill = await toolset.execute(ToolCall("c1", "bill", '{"account": "12345"}'))
        plain = await toolset.execute(ToolCall("c2", "plain", "{}"))
        structured = await toolset.execute(ToolCall("c3", "structured", ""))
        await toolset.aclose()
    assert bill.content == "Account 12345 owes $20." and not bill.is_error
    assert plain.content == "It is sunny."
    assert structured.content == '{"balance": 20}'
    assert server.received[0] == ("bill", {"account": "12345"}, "application/json")
    assert server.received[2][1] == {}


async def test_user_tool_failures_become_error_text_not_exceptions() -> None:
    async with FakeToolServer() as server:
        toolset = Toolset([tool(server, "broken"), tool(server, "slow", timeoutS=0.2),
                           tool(server, "bill")])
        broken = await toolset.execute(ToolCall("c1", "broken", "{}"))
        slow = await toolset.execute(ToolCall("c2", "slow", "{}"))
        garbled = await toolset.execute(ToolCall("c3", "bill", '{"account": '))
        listy = await toolset.execute(ToolCall("c4", "bill", "[1, 2]"))
        unknown = await toolset.execute(ToolCall("c5", "nope", "{}"))
        await toolset.aclose()
    assert broken.is_error and "HTTP 500" in broken.content
    assert slow.is_error and "did not answer" in slow.content
    assert garbled.is_error and listy.is_error and unknown.is_error
    assert [name for name, _, _ in server.received] == ["broken", "slow"]


async def test_builtin_actions_carry_the_configured_number_never_the_models() -> None:
    toolset = Toolset(transfer_number="+15555550100")
    for arguments in ("{}", "", '{"to": "+19005550199"}'):
        resolved = toolset.resolve_action(ToolCall("t1", "transfer_call", arguments))
        assert resolved == ToolCall("t1", "transfer_call", '{"to": "+15555550100"}')
    assert toolset.resolve_action(ToolCall("e1", "end_call")) == ToolCall("e1", "end_call")
    # Not configured means not allowed, whatever the model asks for.
    bare = Toolset(end_call=False)
    assert bare.resolve_action(ToolCall("t1", "transfer_call", '{"to": "+1555"}')) is None
    assert bare.resolve_action(ToolCall("e1", "end_call")) is None
    await toolset.aclose()
    await bare.aclose()
