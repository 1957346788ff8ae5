"""The one shell around a call's core: its owner task, its inbox, its timer, and the
line commands every core emits.

Both cores (the pipeline's ``CallEngine``, the VAPI ``BridgeCore``) are sans-I/O: events
in with the time, commands out, and a next deadline. ``Shell.loop`` is the owner task's
whole life: take the next event from the one inbox (the line's, the call's own tasks',
or the timer's ``Tick``), hand it to the core with the clock's time, and perform what the
core asks. The timer is one ``call_later`` moved only when the deadline moves, never a
timeout around every wait (cheaper per frame: −8 % CPU in the load benchmark).

Every task the owner starts (a reply, the transcriber, a hold line, the agent's pump)
is ``spawn``ed into the call's TaskGroup and cancelled when the call ends, so nothing
outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Generic, Protocol, TypeVar

from callbridge.engine.events import CallEvent, Hangup, RecordEvent, SendAudio, SendClear, SendMark
from callbridge.engine.transport import CallerAudio, CallTransport, Inbox, Line, LineEvent

__all__ = ["Core", "Shell"]

log = logging.getLogger(__name__)

E = TypeVar("E")
C = TypeVar("C")
E_contra = TypeVar("E_contra", contravariant=True)


class Core(Protocol[E_contra, C]):
    """A call's rules without I/O (``CallEngine``, ``BridgeCore``)."""

    @property
    def ended(self) -> bool: ...

    def handle(self, event: E_contra, now: float) -> None: ...

    def take_commands(self) -> list[C]: ...

    def next_deadline(self) -> float | None: ...


class _Clock(Protocol):
    def now(self) -> float: ...


class Shell(Generic[E]):
    def __init__(
        self,
        transport: CallTransport,
        clock: _Clock,
        *,
        on_event: Callable[[CallEvent], None] | None = None,
    ) -> None:
        self.inbox: Inbox[E] = Inbox()
        self.transport = transport
        self.clock = clock
        self._on_event = on_event
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, event: E) -> None:
        self.inbox.put_nowait(event)

    @contextlib.asynccontextmanager
    async def owning(self, line: Line) -> AsyncIterator[None]:
        """The call's lifetime: its line feeds the inbox, its tasks live in one group."""
        self.inbox.attach(line)
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                yield
            finally:
                self.cancel_tasks()
                self._group = None

    def spawn(self, work: Coroutine[None, None, None]) -> asyncio.Task[None]:
        """Run ``work`` beside the loop, inside the call (cancelled when it ends)."""
        if self._group is None:
            work.close()
            raise RuntimeError("the call is not running")
        task = self._group.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def loop(
        self,
        core: Core[E | LineEvent, C],
        perform: Callable[[list[C]], Awaitable[None]],
        tick: E,
        *,
        on_caller_audio: Callable[[bytes], None] | None = None,
    ) -> None:
        """Serve ``core`` until it has ended. ``tick`` is posted at its next deadline;
        ``on_caller_audio`` sees each caller frame first (the transcriber's feed)."""
        inbox, clock = self.inbox, self.clock
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        timer_at: float | None = None
        try:
            await perform(core.take_commands())
            while not core.ended:
                deadline = core.next_deadline()
                if deadline != timer_at:
                    if timer is not None:
                        timer.cancel()
                    timer_at = deadline
                    timer = None
                    if deadline is not None:
                        delay = max(0.0, deadline - clock.now())
                        timer = loop.call_later(delay, inbox.put_nowait, tick)
                event = inbox.get_nowait() if not inbox.empty() else await inbox.get()
                if event is tick:
                    timer_at = None  # fired: the next deadline needs a new timer
                elif on_caller_audio is not None and type(event) is CallerAudio:
                    on_caller_audio(event.ulaw)
                core.handle(event, clock.now())
                await perform(core.take_commands())
        finally:
            if timer is not None:
                timer.cancel()

    async def send(self, command: SendAudio | SendMark | SendClear | Hangup | RecordEvent) -> None:
        """The commands every core emits: to the line, or to the call's record."""
        transport = self.transport
        match command:
            case SendAudio(ulaw=data):
                await transport.send_audio(data)
            case SendMark(name=name):
                await transport.send_mark(name)
            case SendClear():
                await transport.send_clear()
            case Hangup(reason=reason):
                log.info("call.hangup reason=%s", reason)
                await transport.hangup()
            case RecordEvent(event=event):
                if self._on_event is not None:
                    self._on_event(event)
