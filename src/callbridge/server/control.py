"""Steering a live call from any instance: PostgreSQL ``LISTEN/NOTIFY``, no extra broker.

Twilio REST can end or transfer a call from anywhere, but only the instance holding the
call's socket can make the bot *say* something, or end the call the clean way (goodbye,
turn recorded, outcome written). The calls table records which instance serves each
call; every instance listens on a channel named after itself. ``CallControl`` serves a
call held here directly, asks the holder over its channel otherwise, and answers None
when nobody holds it (SQLite, a crashed holder, a call already over), so the API falls
back to REST.

Wire format (JSON in the NOTIFY payload, well under Postgres's 8000-byte limit):
``{"id", "replyTo", "op": "end"|"say", "sid", "message"|"text"}`` and the answer
``{"id", "reply": {"ok": bool, "detail": str}}`` on the asker's channel.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from typing import Any

import asyncpg
from sqlalchemy import select

from callbridge.server.live import END_GRACE_S, LiveCalls
from callbridge.store.database import Database
from callbridge.store.models import Call
from callbridge.telemetry.logging import log_event

__all__ = ["CallControl", "ControlBus", "channel_of"]

log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 5.0
"""How long a holder has to answer before we treat it as gone (then REST decides)."""
_RECONNECT_PAUSE_S = 1.0
_MAX_TEXT_CHARS = 2000


def channel_of(instance: str) -> str:
    """A valid channel name (≤ 63 bytes, no quoting surprises) for any instance name."""
    return "callbridge_" + hashlib.sha1(instance.encode()).hexdigest()[:20]


class ControlBus:
    """One asyncpg connection: LISTEN on our channel, NOTIFY others', match the answers."""

    def __init__(self, url: str, instance: str, live: LiveCalls) -> None:
        self._url = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.instance = instance
        self.channel = channel_of(instance)
        self._live = live
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        await self._connect()
        log_event(log, logging.INFO, "control.listening", channel=self.channel)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._conn is not None:
            await self._conn.close(timeout=5)
            self._conn = None

    async def ask(
        self, instance: str, command: dict[str, Any], timeout_s: float
    ) -> dict[str, Any] | None:
        """Send ``command`` to ``instance``; its answer, or None if none came in time."""
        key = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        try:
            await self._notify(
                channel_of(instance), {**command, "id": key, "replyTo": self.channel}
            )
            async with asyncio.timeout(timeout_s):
                return await future
        except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
            log_event(
                log, logging.WARNING, "control.no_answer", to=instance, error=type(exc).__name__
            )
            return None
        finally:
            self._waiting.pop(key, None)

    # ------------------------------------------------------------------ internals

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._url)
        await conn.add_listener(self.channel, self._on_notify)
        conn.add_termination_listener(self._on_lost)
        self._conn = conn

    def _on_lost(self, _conn: asyncpg.Connection) -> None:
        if not self._closing:
            log_event(log, logging.ERROR, "control.connection_lost")
            self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        while not self._closing:
            await asyncio.sleep(_RECONNECT_PAUSE_S)
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError) as exc:
                log_event(log, logging.WARNING, "control.reconnect_failed", error=str(exc))
                continue
            log_event(log, logging.INFO, "control.reconnected")
            return

    async def _notify(self, channel: str, payload: dict[str, Any]) -> None:
        if self._conn is None:
            raise OSError("control connection is down")
        async with self._lock:
            await self._conn.execute("SELECT pg_notify($1, $2)", channel, json.dumps(payload))

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            log_event(log, logging.WARNING, "control.bad_message")
            return
        if not isinstance(message, dict):
            return
        if "reply" in message:
            future = self._waiting.get(str(message.get("id")))
            if future is not None and not future.done() and isinstance(message["reply"], dict):
                future.set_result(message["reply"])
            return
        self._spawn(self._serve(message))

    async def _serve(self, message: dict[str, Any]) -> None:
        reply = await serve_command(self._live, message)
        reply_to = message.get("replyTo")
        if isinstance(reply_to, str):
            try:
                await self._notify(reply_to, {"id": message.get("id"), "reply": reply})
            except (asyncpg.PostgresError, OSError) as exc:
                log_event(log, logging.WARNING, "control.reply_failed", error=str(exc))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def serve_command(live: LiveCalls, message: dict[str, Any]) -> dict[str, Any]:
    """Carry out one command for a call held here."""
    sid = str(message.get("sid", ""))
    call = live.get(sid)
    if call is None:
        return {"ok": False, "detail": "not here"}
    match message.get("op"):
        case "end":
            raw = message.get("message")
            text = raw[:_MAX_TEXT_CHARS] if isinstance(raw, str) else None
            return {"ok": True, "detail": await call.end("api", text)}
        case "say":
            call.say(str(message.get("text", ""))[:_MAX_TEXT_CHARS])
            return {"ok": True, "detail": "queued"}
        case other:
            return {"ok": False, "detail": f"unknown op {other!r}"}


class CallControl:
    """End a call or make it speak, wherever its socket is."""

    def __init__(
        self, live: LiveCalls, instance: str, database: Database | None, bus: ControlBus | None
    ) -> None:
        self._live = live
        self._instance = instance
        self._database = database
        self.bus = bus

    async def end(self, sid: str, message: str | None) -> str | None:
        """How it ended ("ended", "already over"…), or None: no instance holds it."""
        timeout = ASK_TIMEOUT_S + (END_GRACE_S if message else 0)
        reply = await self._run({"op": "end", "sid": sid, "message": message}, timeout)
        return str(reply["detail"]) if reply is not None else None

    async def say(self, sid: str, text: str) -> bool:
        """True once the holder has queued ``text``; False when no instance holds the call."""
        return await self._run({"op": "say", "sid": sid, "text": text}, ASK_TIMEOUT_S) is not None

    async def _run(self, command: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        if self._live.get(command["sid"]) is not None:
            return await serve_command(self._live, command)
        holder = await self._holder(command["sid"])
        if holder is None or holder == self._instance or self.bus is None:
            return None
        reply = await self.bus.ask(holder, command, timeout_s)
        if reply is None or not reply.get("ok"):
            return None
        return reply

    async def _holder(self, sid: str) -> str | None:
        if self._database is None or self.bus is None:
            return None
        async with self._database.sessions() as session:
            instance = await session.scalar(
                select(Call.instance).where(Call.sid == sid, Call.ended_at.is_(None))
            )
        return instance or None
