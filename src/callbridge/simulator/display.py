"""The live view while a simulated call runs: what the caller hears, refreshed 4×/s."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from rich.console import Console
from rich.live import Live
from rich.table import Table

from callbridge.simulator.caller import LiveCall

__all__ = ["live_view", "status_table"]


def status_table(call: LiveCall, name: str) -> Table:
    table = Table(title=f"{name} {call.options.call_sid}", title_justify="left", box=None)
    table.add_column(style="bold")
    table.add_column()
    elapsed = call.elapsed_s
    state = "ended" if call.ended else "bot speaking" if call.playback.speaking else "listening"
    table.add_row("time", f"{elapsed:5.1f} s  {state}")
    table.add_row("buffered", f"{call.playback.buffered_ms:4.0f} ms of bot audio")
    turns = call.tracker.turns
    if turns:
        last = turns[-1]
        latency = "-" if last.latency_ms is None else f"{last.latency_ms:.0f} ms"
        clear = "-" if last.bargein_ms is None else f"{last.bargein_ms:.0f} ms"
        table.add_row("turn", f"#{last.index} {last.label[:40]!r} latency {latency} clear {clear}")
    table.add_row(
        "line",
        f"{call.frames_sent} sent, {call.frames_received} received, "
        f"{call.marks_received} marks, {call.tracker.clears} clears, "
        f"{call.playback.underruns} underruns",
    )
    return table


@contextlib.asynccontextmanager
async def live_view(console: Console, name: str) -> AsyncIterator[list[LiveCall]]:
    """Yields a slot; put the call in it once connected and the view follows it."""
    slot: list[LiveCall] = []

    async def refresh(live: Live) -> None:
        while True:
            if slot:
                live.update(status_table(slot[0], name), refresh=True)
            await asyncio.sleep(0.25)

    with Live(console=console, auto_refresh=False, transient=True) as live:
        task = asyncio.create_task(refresh(live))
        try:
            yield slot
        finally:
            task.cancel()
            await asyncio.wait({task})
            live.refresh()
