"""Items from a model's HTTP exchange task to the reply reading them, one at a time.

The exchange runs in a task of its own (openai.py says why) and hands every parsed
chunk, one per token, to the reply. ``asyncio.Queue`` did that with a bound, a getters
and a putters deque, a task counter and an ``Event`` cleared on every put; here there
is one reader and no bound, so a put is an append and, when the reader waits, one
future resolved.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Handoff"]

T = TypeVar("T")


class Handoff(Generic[T]):
    """Unbounded, first in first out, for one reader (a second would be a bug)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        items = self._items
        while not items:
            if self._waiter is not None:
                raise RuntimeError("Handoff has one reader")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return items.popleft()
