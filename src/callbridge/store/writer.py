"""The one task per process that writes the call record.

Calls never wait on the database: they ``submit`` an op, which only appends to a bounded
queue. The writer takes whatever has queued up, writes it in one transaction and
commits at once, so a finished turn is durable a few milliseconds after it ends and a
``kill -9`` loses only what was still in the queue. When the database is slow the queue
fills and new ops are dropped and counted, never the audio of a live call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from callbridge.store.database import Database
from callbridge.store.ops import StoreOp, apply
from callbridge.telemetry.logging import log_event

__all__ = ["MAX_BATCH", "MAX_QUEUED", "StoreWriter"]

log = logging.getLogger(__name__)

MAX_QUEUED = 20_000
"""About a minute of a busy instance's turns and events; beyond it the store is stuck."""
MAX_BATCH = 500
_RETRY_PAUSE_S = 1.0


@dataclass(frozen=True, slots=True)
class _Barrier:
    done: asyncio.Future[None]


class StoreWriter:
    def __init__(
        self,
        database: Database,
        *,
        max_queued: int = MAX_QUEUED,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.database = database
        self._queue: asyncio.Queue[StoreOp | _Barrier | None] = asyncio.Queue(max_queued)
        self._task: asyncio.Task[None] | None = None
        self._on_drop = on_drop
        self.dropped = 0
        self.failed = 0
        self.written = 0

    @property
    def healthy(self) -> bool:
        """The writer task is running (``/readyz`` asks)."""
        return self._task is not None and not self._task.done()

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
            self._task = asyncio.create_task(self._run(), name="store-writer")

    async def flush(self) -> None:
        """Wait until everything submitted before this call is committed (or given up)."""
        if self._task is None or self._task.done():
            return
        done = asyncio.get_running_loop().create_future()
        await self._queue.put(_Barrier(done))
        await done

    async def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop."""
        task = self._task
        if task is None:
            return
        if not task.done():
            await self._queue.put(None)
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(task)
            except TimeoutError:
                log_event(log, logging.ERROR, "store.close_timeout", queued=self._queue.qsize())
                task.cancel()
                await asyncio.wait({task})
        self._task = None

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            items = [first]
            while len(items) < MAX_BATCH and not self._queue.empty():
                items.append(self._queue.get_nowait())
            ops = [i for i in items if i is not None and not isinstance(i, _Barrier)]
            if ops:
                await self._write(ops)
            for item in items:
                if isinstance(item, _Barrier) and not item.done.done():
                    item.done.set_result(None)
            if None in items:
                return

    async def _write(self, ops: Sequence[StoreOp]) -> None:
        try:
            await self._commit(ops)
            self.written += len(ops)
            return
        except SQLAlchemyError:
            log.exception("store.batch_failed ops=%d", len(ops))
        # One bad op must not take the others with it: write them one by one.
        await asyncio.sleep(_RETRY_PAUSE_S)
        for op in ops:
            try:
                await self._commit([op])
                self.written += 1
            except SQLAlchemyError:
                self.failed += 1
                log.exception("store.op_failed op=%s sid=%s", type(op).__name__, op.sid)

    async def _commit(self, ops: Sequence[StoreOp]) -> None:
        async with self.database.sessions() as session, session.begin():
            for op in ops:
                await apply(session, op)

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
