"""The dashboard's store queries at 100 000 calls: one calls-list page (each filter and
sort), a deep page, and the overview, on SQLite (the default store).

    .venv/bin/python bench/dashboard.py [--calls 100000] [--keep DIR]

Builds the database first (≈6 turns and ≈3 events a call, spread over 7 days; about a
minute), then prints the median of 5 runs of each query in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from callbridge.store.database import Database
from callbridge.store.models import Call, Event, Turn
from callbridge.store.overview import load_overview
from callbridge.store.search import CallQuery, search_calls

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BATCH = 5000


async def build(database: Database, calls: int, rng: random.Random) -> None:
    await database.migrate()
    span_s = 7 * 24 * 3600
    async with database.engine.begin() as conn:
        for start in range(0, calls, BATCH):
            call_rows: list[dict[str, Any]] = []
            turn_rows: list[dict[str, Any]] = []
            event_rows: list[dict[str, Any]] = []
            for i in range(start, min(calls, start + BATCH)):
                sid = f"CA{i:032x}"
                began = NOW - timedelta(seconds=rng.uniform(0, span_s))
                length = rng.uniform(10, 300)
                call_rows.append(
                    {
                        "sid": sid,
                        "from_number": f"+1555{rng.randrange(10_000_000):07d}",
                        "to_number": "+15550100000",
                        "direction": "inbound",
                        "status": "completed",
                        "assistant": rng.choice(("keypad-menu", "sales", "support")),
                        "outcome": "hangup",
                        "started_at": began,
                        "ended_at": began + timedelta(seconds=length),
                        "updated_at": began,
                    }
                )
                for seq in range(1, 7):
                    first_frame = rng.lognormvariate(5.5, 0.4)
                    at = began + timedelta(seconds=seq * length / 7)
                    turn_rows.append(
                        {
                            "call_sid": sid,
                            "seq": seq,
                            "role": "assistant" if seq % 2 else "user",
                            "kind": "answer",
                            "text": "words " * 12,
                            "heard_text": None,
                            "interrupted": False,
                            "started_at": at,
                            "ended_at": at + timedelta(seconds=2),
                            "stt_ms": 100.0,
                            "first_audio_ms": first_frame - 5,
                            "first_frame_ms": first_frame,
                            "latency_ms": {"stt": 100.0, "first_frame": first_frame},
                        }
                    )
                kinds = ["status", "stream_started"]
                if rng.random() < 0.3:
                    kinds.append("barge_in")
                if rng.random() < 0.05:
                    kinds.append("provider_retry")
                for kind in kinds:
                    event_rows.append(
                        {
                            "call_sid": sid,
                            "at": began + timedelta(seconds=1),
                            "kind": kind,
                            "data": {"reaction_ms": rng.randint(120, 300), "provider": "deepgram"},
                        }
                    )
            await conn.execute(insert(Call), call_rows)
            await conn.execute(insert(Turn), turn_rows)
            await conn.execute(insert(Event), event_rows)
        await conn.exec_driver_sql("ANALYZE")


async def timed(name: str, run: Callable[[], Awaitable[object]]) -> None:
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - t0) * 1000)
    print(f"{name:<44} {statistics.median(samples):8.1f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the database here")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="cb-dash-bench-"))
    path = folder / "bench.db"
    database = Database(f"sqlite+aiosqlite:///{path}")
    if not path.exists():
        t0 = time.perf_counter()
        await build(database, args.calls, random.Random(15))
        print(f"built {args.calls} calls in {time.perf_counter() - t0:.0f} s ({path})")
    a_number = "+15550100000"
    queries: dict[str, CallQuery] = {
        "newest page": CallQuery(),
        "sort by duration": CallQuery(sort="duration"),
        "sort by slowest turn": CallQuery(sort="latency"),
        "had a fault": CallQuery(had_fault=True),
        "no barge-in, by slowest turn": CallQuery(had_barge_in=False, sort="latency"),
        "assistant + one day": CallQuery(
            assistant="sales", since=NOW - timedelta(days=2), until=NOW - timedelta(days=1)
        ),
        "number (caller or called)": CallQuery(number=a_number, limit=50),
        "page 1000 (offset 49 950)": CallQuery(offset=49_950),
    }
    for name, query in queries.items():
        await timed(f"calls: {name}", lambda q=query: search_calls(database, q))
    await timed("overview: 24 h", lambda: load_overview(database, NOW - timedelta(days=1), NOW))
    await timed("overview: 7 d", lambda: load_overview(database, NOW - timedelta(days=7), NOW))
    await database.dispose()


if __name__ == "__main__":
    asyncio.run(main())
