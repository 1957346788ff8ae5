"""Events from a client's reader task to whoever iterates them: one end, one failure.

Streaming clients hand their events over the same way: a task reading the vendor's
socket puts them in a queue and, when the stream is over, an end marker, with the error
that ended it if one did. ``events()`` yields the events, then stops or raises that
error; a second reader (or a second ``events()`` call) stops the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final, Generic, TypeVar

from callbridge.errors import ProviderError

__all__ = ["Inbox"]

T = TypeVar("T")


class _End:
    """Ends the event stream."""


_END: Final = _End()


class Inbox(Generic[T]):
    __slots__ = ("_queue", "failure")

    def __init__(self) -> None:
        self._queue: asyncio.Queue[T | _End] = asyncio.Queue()
        self.failure: ProviderError | None = None

    def put(self, item: T) -> None:
        self._queue.put_nowait(item)

    def end(self, failure: ProviderError | None = None) -> None:
        """No more events; with ``failure``, the readers get it after the last one. A
        later plain ``end`` (closing after a failure) does not hide it."""
        if failure is not None:
            self.failure = failure
        self._queue.put_nowait(_END)

    async def events(self) -> AsyncIterator[T]:
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._queue.put_nowait(item)  # a second reader ends too
                if self.failure is not None:
                    raise self.failure
                return
            yield item
