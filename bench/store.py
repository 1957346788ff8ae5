"""What the call record costs the server's process: CPU per op written by the StoreWriter.

    .venv/bin/python bench/store.py                 # 100 calls x 20 turns, SQLite
    .venv/bin/python bench/store.py --calls 200 --turns 10
    .venv/bin/python bench/store.py --url postgresql://user@127.0.0.1/db

Each call's turn submits what a real turn does (a ``TurnEnded`` and three events; the
first turn also the ``CallSeen``), every call's turn before the writer is flushed, so
batches are as a busy instance makes them. CPU is this process's (``time.process_time``,
aiosqlite's thread included) over the writes only; the database server's is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from callbridge.store.database import Database
from callbridge.store.ops import CallSeen, EventHappened, TurnEnded
from callbridge.store.writer import StoreWriter


async def run(url: str, calls: int, turns: int) -> dict[str, object]:
    database = Database(url)
    await database.migrate()
    writer = StoreWriter(database)
    writer.start()
    now = datetime.now(UTC)
    ops = 0
    cpu = time.process_time()
    for seq in range(turns):
        for call in range(calls):
            sid = f"CA{call:032d}"
            if seq == 0:
                writer.submit(CallSeen(sid, now, from_number="+15550100", status="in-progress"))
                ops += 1
            writer.submit(TurnEnded(sid, seq, "user", "", "I would like to check my bill.",
                                    None, False, now, now, {"stt": 120.0, "first_frame": 420.0}))
            for kind in ("speech_started", "barge_in", "tts_first_audio"):
                writer.submit(EventHappened(sid, now, kind, {"turn": seq}))
            ops += 4
        await writer.flush()
    cpu = time.process_time() - cpu
    await writer.close()
    await database.dispose()
    return {"ops": ops, "written": writer.written, "failed": writer.failed,
            "cpu_s": round(cpu, 3), "us_per_op": round(cpu / ops * 1e6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--url", help="a database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        if url.startswith("postgresql://"):
            url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
        print(json.dumps(asyncio.run(run(url, args.calls, args.turns))))


if __name__ == "__main__":
    main()
