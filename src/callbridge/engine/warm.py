"""Keeping the model's connection warm, off the turn path.

A new connection to a vendor ~50 ms away costs a turn TCP + TLS (~150 ms). The LLM
clients keep theirs open between turns; this asks them for a cheap request (``warm``)
when a call starts and when a caller starts a turn, so that by the end of the turn an
idle connection is waiting: one is reused if idle, a new one opens while the caller is
still talking if every one is busy with other calls.
"""

from __future__ import annotations

import asyncio

__all__ = ["warm_up"]

_warming: set[asyncio.Task[None]] = set()


def warm_up(llm: object) -> None:
    """Fire and forget; a model without ``warm`` (scripted, local) needs nothing."""
    warm = getattr(llm, "warm", None)
    if warm is None:
        return
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(warm(), name="llm.warm")
    _warming.add(task)
    task.add_done_callback(_warming.discard)
