"""A small round-robin TCP balancer, as a cloud load balancer behaves for callbridge.

Each new connection (a webhook POST, a Media Streams socket) goes to the next backend
whose ``/readyz`` said 200 at the last probe (every 50 ms), so a draining instance stops
getting new calls while its live sockets carry on untouched. No stickiness: a call's
webhook and its socket are two connections and may land on different instances. It
notes which backend got which connection, and the CallSid of each webhook it passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

import httpx

__all__ = ["RoundRobinProxy"]

PROBE_EVERY_S = 0.05
_CALL_SID = re.compile(rb"CallSid=(CA[0-9a-f]{32})")
_HEAD_BYTES = 8192


@dataclass
class RoundRobinProxy:
    backends: list[int]  # ports on 127.0.0.1
    port: int = 0
    ready: list[bool] = field(default_factory=list)
    connections: list[tuple[int, bytes]] = field(default_factory=list)  # backend, first line
    webhook_backend: dict[str, int] = field(default_factory=dict)  # CallSid → backend
    _next: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.ready = [False] * len(self.backends)
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._probe())

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _probe(self) -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
            while True:
                for i, port in enumerate(self.backends):
                    try:
                        r = await client.get(f"http://127.0.0.1:{port}/readyz")
                        self.ready[i] = r.status_code == 200
                    except httpx.HTTPError:
                        self.ready[i] = False
                await asyncio.sleep(PROBE_EVERY_S)

    def _pick(self) -> int | None:
        for _ in range(len(self.backends)):
            i = self._next % len(self.backends)
            self._next += 1
            if self.ready[i]:
                return i
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._spawn(self._serve(reader, writer))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self._pick()
        if backend is None:  # nobody ready: what a balancer does, a 503
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.backends[backend]
            )
        except OSError:
            writer.close()
            return
        head = bytearray()

        def note(chunk: bytes) -> None:
            if len(head) >= _HEAD_BYTES:
                return
            first = not head
            head.extend(chunk[: _HEAD_BYTES - len(head)])
            if first:
                self.connections.append((backend, bytes(head.split(b"\r\n", 1)[0])))
            if head.startswith(b"POST /voice") and (m := _CALL_SID.search(head)):
                self.webhook_backend[m.group(1).decode()] = backend  # the last one answers

        await asyncio.gather(_pipe(reader, up_writer, note), _pipe(up_reader, writer, None))

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, note: object) -> None:
    try:
        while chunk := await reader.read(65536):
            if callable(note):
                note(chunk)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()
