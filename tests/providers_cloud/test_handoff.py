"""The exchange → reply handoff: order, a waiting reader woken, a cancelled one gone."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.providers.llm.handoff import Handoff


async def test_items_come_out_in_order_and_a_waiting_reader_wakes() -> None:
    handoff: Handoff[int] = Handoff()
    handoff.put(1)
    handoff.put(2)
    assert [await handoff.get(), await handoff.get()] == [1, 2]
    reading = asyncio.create_task(handoff.get())
    await asyncio.sleep(0)
    assert not reading.done()
    handoff.put(3)
    handoff.put(4)  # a second put before the reader ran: kept, not lost
    assert await reading == 3
    assert await handoff.get() == 4


async def test_a_cancelled_reader_leaves_it_usable_and_one_reader_at_a_time() -> None:
    handoff: Handoff[str] = Handoff()
    reading = asyncio.create_task(handoff.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one reader"):
        await handoff.get()
    reading.cancel()
    await asyncio.wait({reading})
    handoff.put("after")
    assert await handoff.get() == "after"
