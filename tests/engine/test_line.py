"""The line and the owner's inbox: one typed queue, in order, and a backlog that counts
only the caller's frames (a long reply must not make the adapter drop caller audio)."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.engine.events import EngineEvent, ReplyAudio
from callbridge.engine.transport import (
    CallerAudio,
    CallerDtmf,
    CallerHungUp,
    Inbox,
    Line,
    LineEvent,
    MarkPlayed,
)

FRAME = b"\xff" * 160


async def test_events_posted_before_the_owner_attaches_come_first_in_order() -> None:
    line = Line()
    line.put_nowait(CallerAudio(FRAME, 0))
    line.put_nowait(CallerDtmf("1"))
    inbox: Inbox[EngineEvent] = Inbox()
    inbox.put_nowait(ReplyAudio(1, 0, b""))  # the owner's own, posted before it took the line
    inbox.attach(line)
    line.put_nowait(MarkPlayed("m1"))
    inbox.put_nowait(ReplyAudio(1, 0, FRAME))
    got = [await inbox.get() for _ in range(5)]
    assert got == [ReplyAudio(1, 0, b""), CallerAudio(FRAME, 0), CallerDtmf("1"), MarkPlayed("m1"),
                   ReplyAudio(1, 0, FRAME)]


async def test_backlog_counts_unread_caller_frames_only() -> None:
    line = Line()
    line.put_nowait(CallerAudio(FRAME))
    assert line.qsize() == 1
    inbox: Inbox[EngineEvent] = Inbox()
    inbox.attach(line)
    for _ in range(3):
        line.put_nowait(CallerAudio(FRAME))
    line.put_nowait(MarkPlayed("m1"))
    for _ in range(100):
        inbox.put_nowait(ReplyAudio(1, 0, FRAME))  # the bot's audio is not the caller's
    assert line.qsize() == 4
    inbox.get_nowait()
    await inbox.get()
    assert line.qsize() == 2


def test_taps_see_every_line_event_once_and_a_line_has_one_owner() -> None:
    line = Line()
    seen: list[LineEvent] = []
    line.put_nowait(CallerAudio(FRAME))
    line.add_tap(seen.append)
    inbox: Inbox[LineEvent] = Inbox()
    inbox.attach(line)
    line.put_nowait(CallerHungUp())
    assert seen == [CallerAudio(FRAME), CallerHungUp()]
    with pytest.raises(RuntimeError):
        Inbox[LineEvent]().attach(line)


async def test_an_inbox_has_one_reader_and_a_cancelled_one_leaves_it_usable() -> None:
    """The owner awaits ``readable()`` (no coroutine per wake-up): a second reader is a
    bug; a reader cancelled while waiting (the call ending) must not block the next."""
    inbox: Inbox[EngineEvent] = Inbox()
    first = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one reader"):
        inbox.readable()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    pending = inbox.readable()  # empty: it waits for a post
    assert not pending.done()
    inbox.put_nowait(ReplyAudio(1, 0, FRAME))
    assert pending.done()
    assert inbox.readable().done()  # something is waiting already: done at once
    assert await asyncio.wait_for(inbox.get(), 1) == ReplyAudio(1, 0, FRAME)
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait(ReplyAudio(1, 1, FRAME))
    assert await asyncio.wait_for(second, 1) == ReplyAudio(1, 1, FRAME)


@pytest.mark.parametrize("ticked", [False, True])
def test_put_audio_posts_a_frame_under_the_cap_and_refuses_one_at_it(ticked: bool) -> None:
    """The socket adapter's one call per frame: the same cap as ``qsize`` (caller frames
    not yet taken, the owner's own events not counted), taps see only what is posted."""
    line = Line()
    seen: list[LineEvent] = []
    assert line.put_audio(CallerAudio(FRAME, 0), 2)  # before the owner attaches
    line.add_tap(seen.append)
    inbox: Inbox[EngineEvent] = Inbox()
    inbox.attach(line, ticked=ticked)
    inbox.put_nowait(ReplyAudio(1, 0, FRAME))  # the bot's audio is not the caller's
    assert line.put_audio(CallerAudio(FRAME, 20), 2)
    assert line.qsize() == 2
    assert not line.put_audio(CallerAudio(FRAME, 40), 2)  # at the cap: not posted
    assert line.qsize() == 2 and seen == [CallerAudio(FRAME, 0), CallerAudio(FRAME, 20)]
    if ticked:
        assert line.take_frames() == [CallerAudio(FRAME, 0), CallerAudio(FRAME, 20)]
    else:
        taken = [inbox.get_nowait() for _ in range(3)]
        assert taken[::2] == [CallerAudio(FRAME, 0), CallerAudio(FRAME, 20)]
    assert line.qsize() == 0
    assert line.put_audio(CallerAudio(FRAME, 60), 2)
