"""``Drain``: waits for the live calls and for streams still on their way, then ends the
rest at the timeout. Short real times (the quiet period patched to 0.2 s)."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.engine.transport import EndCall, LineEvent
from callbridge.server import drain as drain_module
from callbridge.server.drain import Drain
from callbridge.server.live import LiveCalls

QUIET = 0.2


@pytest.fixture(autouse=True)
def short_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain_module, "QUIET_S", QUIET)


def _hold(live: LiveCalls, sid: str, *, obeys_end: bool = True) -> list[LineEvent]:
    posted: list[LineEvent] = []

    def post(event: LineEvent) -> None:
        posted.append(event)
        if obeys_end and isinstance(event, EndCall):
            call = live.get(sid)
            assert call is not None
            asyncio.get_running_loop().call_later(0.02, live.remove, call)

    async def hang_up() -> None:
        pass

    live.add(sid, post, hang_up)
    return posted


async def test_an_idle_instance_waits_only_the_quiet_period() -> None:
    drain = Drain(LiveCalls())
    result = await drain.run(timeout_s=5, message=None)
    assert drain.draining and (result.finished, result.ended) == (0, 0)
    assert QUIET - 0.05 <= result.seconds < QUIET + 0.5  # from its start, logging aside


async def test_a_stream_answered_before_the_signal_is_waited_for() -> None:
    live = LiveCalls()
    drain = Drain(live)
    drain.note_answered()  # the webhook got its TwiML; the socket is on its way

    async def caller() -> None:
        await asyncio.sleep(0.15)
        _hold(live, "CA1")
        await asyncio.sleep(0.3)
        call = live.get("CA1")
        assert call is not None
        live.remove(call)  # the call ends by itself

    task = asyncio.create_task(caller())
    result = await drain.run(timeout_s=5, message=None)
    await task
    assert (result.finished, result.ended) == (1, 0)
    assert result.seconds >= 0.45  # without the quiet period it would have left at once


async def test_calls_still_up_at_the_timeout_get_the_goodbye() -> None:
    live = LiveCalls()
    drain = Drain(live)
    posted = _hold(live, "CA2")
    result = await drain.run(timeout_s=0.3, message="We are closing.")
    assert posted == [EndCall("drain", "We are closing.")]
    assert (result.finished, result.ended) == (0, 1) and drain.ended_calls == 1
    assert len(live) == 0
