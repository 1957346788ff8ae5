"""Helpers for the cloud-provider tests: audio frames, a recording sleep, event collection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")

SPEECH = bytes([0x10]) * 160  # a loud μ-law frame (20 ms)
SILENCE = b"\xff" * 160  # μ-law zero


class RecordingSleep:
    """Stands in for ``asyncio.sleep`` in the retry helper: records, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)




async def take_until(
    events: AsyncIterator[T], stop: Callable[[T], bool], *, limit_s: float = 5.0
) -> list[T]:
    """Collect events up to and including the first one ``stop`` accepts."""
    seen: list[T] = []
    async with asyncio.timeout(limit_s):
        async for event in events:
            seen.append(event)
            if stop(event):
                return seen
    return seen


async def wait_for(condition: Callable[[], bool], *, limit_s: float = 5.0) -> None:
    """Poll a condition the fake updates (no timing is asserted, only the outcome)."""
    async with asyncio.timeout(limit_s):
        while not condition():  # noqa: ASYNC110 - the fakes expose counters, not events
            await asyncio.sleep(0.005)
