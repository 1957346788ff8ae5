"""A TCP relay in front of a fake that makes every NEW connection cost what a real one does.

A vendor ~50 ms away costs a TCP handshake and a TLS 1.3 handshake (≈ 3 × 50 ms) before
the first request byte reaches it; a kept-alive connection pays nothing again. The relay
accepts at once (the kernel does), holds the client's bytes for ``cost_s``, then relays
both ways without delay. So a client that opens a socket per request pays ``cost_s`` every
time and one that keeps its connection pays it once, which is the difference that matters
on a turn. ``connections`` counts what was opened, for tests and the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

__all__ = ["CostlyLink"]


class CostlyLink:
    def __init__(self, target_port: int, cost_s: float) -> None:
        self.target_port = target_port
        self.cost_s = cost_s
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):  # the pipes see their sockets end and return
            writer.close()
        if self._pipes:
            _, stuck = await asyncio.wait(self._pipes, timeout=1.0)
            for task in stuck:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        self._writers.add(client_w)
        try:
            await asyncio.sleep(self.cost_s)  # the handshakes a real vendor connection needs
            try:
                vendor_r, vendor_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            self._writers.add(vendor_w)
            _nodelay(client_w)
            _nodelay(vendor_w)
            try:
                await asyncio.gather(_pipe(client_r, vendor_w), _pipe(vendor_r, client_w))
            finally:
                vendor_w.close()
                self._writers.discard(vendor_w)
        finally:
            client_w.close()
            self._writers.discard(client_w)
            self._pipes.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if sink.can_write_eof():
                sink.write_eof()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
