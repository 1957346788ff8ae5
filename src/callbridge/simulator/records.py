"""Reads what the bot said from the server's call-records API (``GET /api/calls/{sid}``),
for the scenario step ``expect_bot_says``.

The server commits each turn as it ends, through a background writer, so the last turn
of a call may land a moment after the hang-up: the lookup retries briefly.
"""

from __future__ import annotations

import asyncio

import httpx

from callbridge.simulator.runner import BotTurns

__all__ = ["api_bot_turns"]


def api_bot_turns(
    base_url: str, api_token: str, *, wait_s: float = 3.0, poll_s: float = 0.2
) -> BotTurns:
    async def bot_turns(call_sid: str) -> list[str] | None:
        headers = {"Authorization": f"Bearer {api_token}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, trust_env=False) as http:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while True:
                response = await http.get(f"/api/calls/{call_sid}")
                if response.status_code not in (200, 404):
                    response.raise_for_status()  # 401/403/503: the token is wrong or unset
                said = _said(response) if response.status_code == 200 else None
                if said or loop.time() >= deadline:
                    return said
                await asyncio.sleep(poll_s)

    return bot_turns


def _said(response: httpx.Response) -> list[str]:
    turns = response.json().get("turns", [])
    return [str(t.get("text", "")) for t in turns if t.get("role") == "assistant"]
