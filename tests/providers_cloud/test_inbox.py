"""The event hand-over the streaming clients share: events, then a clean end or the
error that ended the stream, for every reader."""

from __future__ import annotations

import pytest

from callbridge.errors import ProviderError
from callbridge.providers.inbox import Inbox


async def _read(inbox: Inbox[str]) -> list[str]:
    return [item async for item in inbox.events()]


async def test_events_then_a_clean_end_for_every_reader() -> None:
    inbox: Inbox[str] = Inbox()
    inbox.put("a")
    inbox.put("b")
    inbox.end()
    assert await _read(inbox) == ["a", "b"]
    assert await _read(inbox) == []  # a second reader stops too, and does not hang


async def test_a_failure_is_raised_after_the_last_event_and_survives_a_later_close() -> None:
    inbox: Inbox[str] = Inbox()
    inbox.put("a")
    lost = ProviderError("vendor", "socket closed with code 1011", retryable=True)
    inbox.end(lost)
    inbox.end()  # the client's aclose after the failure
    seen: list[str] = []
    with pytest.raises(ProviderError) as raised:
        async for item in inbox.events():
            seen.append(item)
    assert seen == ["a"] and raised.value is lost
    with pytest.raises(ProviderError):
        await _read(inbox)
