"""The control channel between instances, on a real PostgreSQL (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from store.pg import fresh_database

from callbridge.engine.transport import EndCall, LineEvent, SayText
from callbridge.server.control import CallControl, ControlBus, channel_of
from callbridge.server.live import LiveCalls
from callbridge.store.database import Database
from callbridge.store.ops import CallSeen, apply

pytestmark = pytest.mark.deploy

SID = "CA" + "7" * 32


class Instance:
    """One instance's control side: its live calls, its bus, its CallControl."""

    def __init__(self, name: str, url: str, database: Database) -> None:
        self.name = name
        self.live = LiveCalls()
        self.bus = ControlBus(url, name, self.live)
        self.control = CallControl(self.live, name, database, self.bus)
        self.posted: list[LineEvent] = []
        self.hung_up = 0

    def hold(self, sid: str) -> None:
        """A live call whose engine ends it when told to (as the real one does)."""

        def post(event: LineEvent) -> None:
            self.posted.append(event)
            if isinstance(event, EndCall):
                call = self.live.get(sid)
                assert call is not None
                asyncio.get_running_loop().call_later(0.05, self.live.remove, call)

        async def hang_up() -> None:
            self.hung_up += 1

        self.live.add(sid, post, hang_up)


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[Database]:
    db = Database(await fresh_database(postgres_url))
    await db.migrate()
    yield db
    await db.dispose()


@pytest.fixture
async def pair(database: Database) -> AsyncIterator[tuple[Instance, Instance]]:
    a = Instance("host-a-1", database.url, database)
    b = Instance("host-b-2", database.url, database)
    await a.bus.start()
    await b.bus.start()
    yield a, b
    await a.bus.close()
    await b.bus.close()


async def _held_by(database: Database, sid: str, instance: str) -> None:
    async with database.sessions() as session, session.begin():
        await apply(session, CallSeen(sid=sid, at=datetime.now(UTC), instance=instance))


def test_channel_names_are_valid_and_distinct() -> None:
    long_name = "pod-" + "x" * 200
    assert len(channel_of(long_name)) <= 63
    assert channel_of("a") != channel_of("b")


async def test_a_call_on_b_is_ended_and_spoken_to_from_a(
    pair: tuple[Instance, Instance], database: Database
) -> None:
    a, b = pair
    b.hold(SID)
    await _held_by(database, SID, b.name)
    assert await a.control.say(SID, "Hello from A.")
    assert b.posted == [SayText("Hello from A.")]
    assert await a.control.end(SID, "Bye from A.") == "ended"
    assert b.posted[-1] == EndCall("api", "Bye from A.")
    assert b.live.get(SID) is None and b.hung_up == 0  # the engine ended it, no force


async def test_a_holder_that_does_not_answer_means_rest_decides(
    pair: tuple[Instance, Instance], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = pair
    monkeypatch.setattr("callbridge.server.control.ASK_TIMEOUT_S", 0.3)
    await _held_by(database, SID, "crashed-host-9")
    assert await a.control.end(SID, "") is None
    assert not await a.control.say(SID, "anyone?")


async def test_a_call_nobody_holds_is_not_found(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    assert await a.control.end(SID, "") is None
    assert b.posted == []


async def test_a_garbled_notification_is_ignored(
    pair: tuple[Instance, Instance], database: Database
) -> None:
    a, b = pair
    b.hold(SID)
    await _held_by(database, SID, b.name)
    conn = a.bus._conn
    assert conn is not None
    await conn.execute("SELECT pg_notify($1, $2)", b.bus.channel, "not json {")
    assert await a.control.say(SID, "still works")
    assert b.posted == [SayText("still works")]
