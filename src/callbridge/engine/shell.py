"""The one shell around a call's core: its owner task, its inbox, its seat on the
metronome, and the line commands every core emits.

Both cores (the pipeline's ``CallEngine``, the VAPI ``BridgeCore``) are sans-I/O: events
in with the time, commands out, and a next deadline. ``Shell.loop`` is the owner task's
whole life: take the next event from the one inbox (the line's, the call's own tasks',
or the metronome's ``Heard``), hand it to the core with the clock's time, and perform
what the core asks. The caller's frames and the core's deadlines both come on the
process's 20 ms metronome (``metronome.py``): at most one wake-up per tick, with the
tick's frames already decoded and scored; the shell only tells it the core's next
deadline. There is no timer of the call's own.

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
from callbridge.engine.metronome import Metronome
from callbridge.engine.transport import CallerAudio, CallTransport, Heard, Inbox, Line, LineEvent
from callbridge.providers.base import VadStream

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
        metronome: Metronome | None = None,
    ) -> None:
        self.inbox: Inbox[E] = Inbox()
        self.transport = transport
        self.clock = clock
        self._on_event = on_event
        # None: the running loop's for this clock; one given (tests) must read ``clock``.
        self._metronome = metronome
        self._line: Line | None = None
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, event: E) -> None:
        self.inbox.put_nowait(event)

    @contextlib.asynccontextmanager
    async def owning(self, line: Line) -> AsyncIterator[None]:
        """The call's lifetime: its line feeds the inbox, its tasks live in one group."""
        self.inbox.attach(line, ticked=True)
        self._line = line
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
        core: Core[E | LineEvent | Heard, C],
        perform: Callable[[list[C]], Awaitable[None]],
        *,
        vad: VadStream | None = None,
        hears: bool = True,
        on_caller_audio: Callable[[bytes], None] | None = None,
    ) -> None:
        """Serve ``core`` until it has ended (inside ``owning``). ``vad``: the core's
        detector, scored with every call's on the metronome if it batches; ``hears``:
        False when the core only passes the caller's audio on (no decode, no levels);
        ``on_caller_audio`` sees each caller frame once the core has heard it (the
        transcriber's feed: the speech state it paces by is then the frame's own), before
        the core's commands (a ``Finalize`` comes after the audio it covers)."""
        inbox, clock, line = self.inbox, self.clock, self._line
        if line is None:
            raise RuntimeError("loop runs inside owning(line)")
        metronome = self._metronome or Metronome.running(clock)
        member = metronome.join(line, inbox.put_heard, vad=vad, hears=hears)
        try:
            await perform(core.take_commands())
            # ``Inbox.get_nowait`` inline (its deque, its count): every call's every beat.
            items, take = inbox._items, inbox._items.popleft
            while not core.ended:
                member.deadline = core.next_deadline()
                if not items:
                    await inbox.readable()
                event = take()
                if type(event) is Heard:
                    member.waking = False  # (``took_beat``, without the call)
                    inbox.unread_audio -= len(event.ulaw)
                    core.handle(event, clock.now())
                    if on_caller_audio is not None:  # after: the core's verdict is in
                        for frame in event.ulaw:
                            on_caller_audio(frame)
                else:
                    if type(event) is CallerAudio:
                        inbox.unread_audio -= 1
                    core.handle(event, clock.now())
                commands = core.take_commands()
                if commands:  # most beats ask for nothing: no coroutine for them
                    await perform(commands)
        finally:
            metronome.leave(member)

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
