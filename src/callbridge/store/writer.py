"""The one task per process that writes the call record, and keeps writing it.

Calls never wait on the database: they ``submit`` an op, which only appends to a bounded
queue. The writer takes whatever has queued up, writes it in one transaction and
commits at once, so a finished turn is durable a few milliseconds after it ends and a
``kill -9`` loses only what was still in the queue.

When a write fails the writer asks the database a plain ``SELECT 1``. If that fails too,
the database is away (refused, restarting, network gone): the batch is kept, retried in
order with backoff, and new ops wait in the queue behind it — the queue is the backlog,
and only when it is full are new ops dropped (counted and logged). If the database
answers, the batch itself was bad: it is written op by op and only the bad op is lost.
A bug that escapes all that restarts the loop with the same backoff (the held batch is
kept), so one surprise never stops the record for the rest of the process's life.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import text

from callbridge.store.database import Database
from callbridge.store.ops import StoreOp, apply_batch
from callbridge.telemetry.logging import log_event

__all__ = ["BACKOFF_S", "MAX_BATCH", "MAX_QUEUED", "Backoff", "StoreWriter"]

log = logging.getLogger(__name__)

MAX_QUEUED = 20_000
"""About a minute of a busy instance's turns and events: the backlog an outage may build."""
MAX_BATCH = 500
BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Pauses between attempts while the database is away; the last one repeats."""
_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class _Barrier:
    done: asyncio.Future[None]


class _Stop:
    """Queued by ``close``: write what came before, then end."""


class Backoff:
    """The pause before the n-th retry in a row; ``reset`` after a success."""

    def __init__(self, schedule: Sequence[float] = BACKOFF_S) -> None:
        if not schedule:
            raise ValueError("a backoff schedule needs at least one pause")
        self.schedule = tuple(schedule)
        self.attempt = 0

    def next_pause(self) -> float:
        pause = self.schedule[min(self.attempt, len(self.schedule) - 1)]
        self.attempt += 1
        return pause

    def reset(self) -> None:
        self.attempt = 0


class StoreWriter:
    def __init__(
        self,
        database: Database,
        *,
        max_queued: int = MAX_QUEUED,
        on_drop: Callable[[str], None] | None = None,
        backoff_s: Sequence[float] = BACKOFF_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self._queue: asyncio.Queue[StoreOp | _Barrier | _Stop] = asyncio.Queue(max_queued)
        self._task: asyncio.Task[None] | None = None
        self._on_drop = on_drop
        self._backoff = Backoff(backoff_s)
        self._sleep = sleep
        self._clock = clock
        self._held: list[StoreOp] = []  # taken off the queue, not yet committed
        self._barriers: list[asyncio.Future[None]] = []
        self._last_write_ok = True
        self._down_since: float | None = None
        self.dropped = 0
        self.failed = 0
        self.written = 0
        self.restarts = 0
        self.outages = 0

    # --- what calls and the server see ------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while the writer task runs and its last write did not fail (readiness).

        False from the first write that finds the database away until one succeeds
        again, and after a crash of the loop until its next success. An op the database
        refuses as bad (it answers, the op is lost and counted) does not make it False.
        """
        return self._task is not None and not self._task.done() and self._last_write_ok

    @property
    def backlog(self) -> int:
        """Ops waiting to be committed: the held batch plus the queue."""
        return len(self._held) + self._queue.qsize()

    def submit(self, op: StoreOp) -> bool:
        """Queue ``op`` for writing; never blocks. False (and counted) when full or closed."""
        if self._task is None or self._task.done():
            return self._drop(op, "writer not running")
        try:
            self._queue.put_nowait(op)
        except asyncio.QueueFull:
            return self._drop(op, "queue full")
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="store-writer")

    async def flush(self) -> None:
        """Wait until everything submitted before this call is committed (or given up)."""
        if self._task is None or self._task.done():
            return
        done = asyncio.get_running_loop().create_future()
        await self._queue.put(_Barrier(done))
        await done

    async def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop; after ``timeout_s`` give up on the rest."""
        task = self._task
        if task is None:
            return
        if not task.done():
            try:
                async with asyncio.timeout(timeout_s):
                    await self._queue.put(_Stop())  # waits for room if an outage filled it
                    await asyncio.shield(task)
            except TimeoutError:
                log_event(log, logging.ERROR, "store.close_timeout", lost=self.backlog)
                task.cancel()
                await asyncio.wait({task})
        self._task = None

    # --- the writer task ----------------------------------------------------------------

    async def _supervise(self) -> None:
        """Run the loop; if a bug escapes it, log it, pause and run it again."""
        while True:
            try:
                await self._run()
                return
            except Exception:
                self.restarts += 1
                self._last_write_ok = False
                log.exception("store.writer_crashed restarts=%d", self.restarts)
                await self._sleep(self._backoff.next_pause())

    async def _run(self) -> None:
        while True:
            stop = False
            if not self._held:  # else a batch survived a crash: write it before taking more
                stop = await self._take_batch()
            if self._held:
                await self._write_held()
            for done in self._barriers:
                if not done.done():
                    done.set_result(None)
            self._barriers.clear()
            if stop:
                return

    async def _take_batch(self) -> bool:
        """Move up to MAX_BATCH queued ops into ``_held``, ending early at a barrier."""
        item = await self._queue.get()
        while True:
            match item:
                case _Stop():
                    return True
                case _Barrier(done=done):
                    self._barriers.append(done)  # met once the ops before it are written
                    return False
                case _:
                    self._held.append(item)
            if len(self._held) >= MAX_BATCH or self._queue.empty():
                return False
            item = self._queue.get_nowait()

    async def _write_held(self) -> None:
        """Commit ``_held``: as a batch, or op by op if one is bad; wait out an outage."""
        while self._held:
            try:
                await self._commit(self._held)
            except Exception as exc:
                if not await self._database_answers():
                    await self._wait_out_outage(exc)
                    continue
                log_event(
                    log, logging.WARNING, "store.batch_failed", ops=len(self._held), error=str(exc)
                )
                await self._write_one_by_one()
                continue
            self.written += len(self._held)
            self._held.clear()
            self._recovered()

    async def _write_one_by_one(self) -> None:
        while self._held:
            op = self._held[0]
            try:
                await self._commit([op])
            except Exception as exc:
                if not await self._database_answers():
                    await self._wait_out_outage(exc)
                    continue
                self.failed += 1
                log.exception("store.op_failed op=%s sid=%s", type(op).__name__, op.sid)
            else:
                self.written += 1
                self._recovered()
            self._held.pop(0)

    async def _wait_out_outage(self, exc: Exception) -> None:
        self._last_write_ok = False
        if self._down_since is None:
            self._down_since = self._clock()
            self.outages += 1
            log_event(
                log,
                logging.ERROR,
                "store.unavailable",
                error=f"{type(exc).__name__}: {exc}"[:300],
                held=len(self._held),
                queued=self._queue.qsize(),
            )
        await self._sleep(self._backoff.next_pause())

    def _recovered(self) -> None:
        self._last_write_ok = True
        self._backoff.reset()
        if self._down_since is not None:
            log_event(
                log,
                logging.WARNING,
                "store.recovered",
                down_s=round(self._clock() - self._down_since, 1),
                queued=self._queue.qsize(),
                dropped=self.dropped,
            )
            self._down_since = None

    async def _database_answers(self) -> bool:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S), self.database.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # refused, reset, timed out, or the pool's own error: all "away"
            return False
        return True

    async def _commit(self, ops: Sequence[StoreOp]) -> None:
        async with self.database.sessions() as session, session.begin():
            await apply_batch(session, ops)

    def _drop(self, op: StoreOp, reason: str) -> bool:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(reason)
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log_event(
                log,
                logging.WARNING,
                "store.dropped",
                reason=reason,
                op=type(op).__name__,
                dropped=self.dropped,
            )
        return False
