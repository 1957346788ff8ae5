"""What one inbound Media Streams message costs the server's socket path, in CPU.

    .venv/bin/python bench/media_socket.py                    # N = 50 200, sink runner
    .venv/bin/python bench/media_socket.py 100 --runner loopback --seconds 20
    .venv/bin/python bench/media_socket.py 100 --against /work/main/src  # paired before/after
    .venv/bin/python bench/media_socket.py 100 --runner talk --against OTHER/src  # way out

The server (``create_app`` + ``uvicorn_config``, exactly what ``callbridge serve`` runs)
is a child process pinned to one core; N raw sockets on the other core each send
Twilio's ``connected`` and ``start`` and then a 20 ms ``media`` frame every 20 ms, in
Twilio's exact shape (a late tick is skipped, never caught up in a burst). The ``sink``
runner only takes the events off the queue, so the figure is the socket path in
(framing, decode, budgets, queue); ``loopback`` echoes every frame back paced, adding the
socket path out; ``talk`` has the bot talk all the time the way the engine does (a
``Playout`` pulled on each caller frame, a mark every 2 s sentence, sent through the
production transport), so it adds the bot's way out as it is. The server's CPU is read
from /proc over the steady window; µs/message = CPU seconds / inbound media messages.

``--against SRC`` runs a second server, from another source tree (e.g. a checkout with
the ASGI path) and this venv, beside the first on the same core, its callers sending in
the same ticks: both see the same machine over the same window, which is the only fair
before/after on a shared machine (rows taken minutes apart differ by 2x here). The load
average is printed with each row.

Keep ``--seconds`` under 35: the raw callers do not answer the server's keepalive pings.

bench/media_in.py counts the same inbound path (``data_received`` to the ``Line``) in
instructions, in process, for callgrind: the figure this machine's drift cannot move.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVER_CORE = 0
CLIENT_CORE = 1
SECRET = "bench-secret-" + "x" * 32
AUTH_TOKEN = "a" * 32
FRAME_S = 0.020


def serve(port: int, runner_kind: str, data_dir: str) -> None:
    """The child: the production app and uvicorn settings on 127.0.0.1:port."""
    import logging

    import uvicorn

    from callbridge.engine.transport import (
        CallerHungUp,
        CallInfo,
        CallTransport,
        Inbox,
        Line,
        MarkPlayed,
    )
    from callbridge.server.app import create_app, uvicorn_config
    from callbridge.settings import load_settings

    async def sink(info: CallInfo, transport: CallTransport, line: Line) -> None:
        inbox: Inbox[object] = Inbox()
        inbox.attach(line)
        while type(await inbox.get()) is not CallerHungUp:
            pass

    async def talk(info: CallInfo, transport: CallTransport, line: Line) -> None:
        """The bot talks without end: 2 s sentences, paced by the engine's playout."""
        from callbridge.engine.events import SendAudio, SendMark
        from callbridge.engine.playout import Playout

        loop = asyncio.get_running_loop()
        playout, sentence = Playout(send_ahead_ms=200), bytes(range(160)) * 100
        inbox: Inbox[object] = Inbox()
        inbox.attach(line)
        said = 0
        while type(event := await inbox.get()) is not CallerHungUp:
            if type(event) is MarkPlayed:
                playout.mark_played(event.name, loop.time())
                continue
            if playout.next_deadline() is None:  # all sent: the next sentence
                said += 1
                playout.begin_segment((1, said), "words")
                playout.add_audio((1, said), sentence)
                playout.end_segment((1, said))
            for command in playout.pull(loop.time()):
                match command:
                    case SendAudio(ulaw=data):
                        await transport.send_audio(data)
                    case SendMark(name=name):
                        await transport.send_mark(name)

    logging.basicConfig(level=logging.WARNING)
    settings = load_settings(
        auth_token=AUTH_TOKEN,
        account_sid="AC" + "0" * 32,
        stream_secret=SECRET,
        data_dir=Path(data_dir),
        max_calls=0,
    )
    app = create_app(settings, {"sink": sink, "talk": talk}.get(runner_kind))
    config = uvicorn_config(app, "127.0.0.1", port, log_level="warning", access_log=False)
    uvicorn.Server(config).run()


def _client_frame(text: str) -> bytes:
    """A masked text frame (a zero mask: the payload goes as is, as RFC 6455 allows)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def _server_media(stream: str, ulaw_b64: str) -> bytes:
    """One outbound 20 ms ``media`` message as the server frames it (unmasked)."""
    text = json.dumps(
        {"event": "media", "streamSid": stream, "media": {"payload": ulaw_b64}},
        separators=(",", ":"),
    ).encode()
    return bytes([0x81, 126]) + len(text).to_bytes(2, "big") + text


def _media(stream: str, seq: int, ulaw_b64: str) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": "inbound",
                "chunk": str(seq - 1),
                "timestamp": str((seq - 2) * 20),
                "payload": ulaw_b64,
            },
            "streamSid": stream,
        },
        separators=(",", ":"),  # Twilio writes it compact: the codec's fast path
    )


class Caller:
    """One raw socket playing Twilio: handshake, ``connected``, ``start``, then media."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream = "MZ" + secrets.token_hex(16)
        self.call = "CA" + secrets.token_hex(16)
        self.seq = 1
        self.writer: asyncio.StreamWriter | None = None
        self.received = 0

    async def open(self) -> None:
        from callbridge.twilio.tokens import StreamTokens

        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /media HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {head[:80]!r}")
        token = StreamTokens(SECRET).mint(self.call)
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": self.stream,
                "callSid": self.call,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"token": token},
            },
            "streamSid": self.stream,
        }
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        writer.write(_client_frame(json.dumps(connected)) + _client_frame(json.dumps(start)))
        self.writer = writer
        asyncio.get_running_loop().create_task(self._drain(reader))

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65536):
            self.received += len(data)

    def send(self, ulaw_b64: str) -> None:
        self.seq += 1
        assert self.writer is not None
        self.writer.write(_client_frame(_media(self.stream, self.seq, ulaw_b64)))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    servers: list[tuple[str, int, int]], n: int, seconds: float
) -> list[dict[str, object]]:
    """Drive ``n`` callers at each (label, port, pid) server over the same window."""
    callers = {label: [Caller(port) for _ in range(n)] for label, port, _ in servers}
    for group in callers.values():
        for c in group:
            await c.open()
    ulaw_b64 = base64.b64encode(bytes(range(160))).decode()
    loop = asyncio.get_running_loop()
    warmup_s = 2.0
    t0 = loop.time()
    next_tick, late_max, ticks = t0, 0.0, 0
    window: tuple[float, dict[int, float]] | None = None
    received0: dict[str, int] = {}
    sent_in_window = 0
    order = list(callers.values())
    while True:
        now = loop.time()
        late_max = max(late_max, now - next_tick) if window is not None else 0.0
        ticks += 1
        for group in order if ticks % 2 else reversed(order):  # neither server always first
            for c in group:
                c.send(ulaw_b64)
        if window is not None:
            sent_in_window += n
        if window is None and now - t0 >= warmup_s:
            window = (time.monotonic(), {pid: _cpu_s(pid) for _, _, pid in servers})
            received0 = {label: sum(c.received for c in group) for label, group in callers.items()}
        if now - t0 >= warmup_s + seconds:
            break
        # Late (a shared machine) means fewer frames, never a catch-up burst: a burst
        # would let the server read several frames per wake-up and flatter the figure.
        next_tick = max(next_tick + FRAME_S, loop.time())
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
    assert window is not None
    wall = time.monotonic() - window[0]
    rows: list[dict[str, object]] = []
    for label, _, pid in servers:
        cpu = _cpu_s(pid) - window[1][pid]
        received = sum(c.received for c in callers[label]) - received0[label]
        # The loopback's echo: one 20 ms media message each (the marks are 1 in 50);
        # (``talk``: bytes / a 20 ms message's are 20 ms frames, whatever the messages).
        out_msgs = received / len(_server_media(callers[label][0].stream, ulaw_b64))
        rows.append(
            {
                "server": label,
                "calls": n,
                "cpu_pct": round(100 * cpu / wall, 1),
                "us_per_msg": round(cpu / sent_in_window * 1e6, 1),
                "client_late_ms": round(late_max * 1000, 1),
                "received_kb": round(received / 1024),  # what the server sent back
                "us_per_msg_in_out": round(cpu / (sent_in_window + out_msgs) * 1e6, 1),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    for group in callers.values():
        for c in group:
            assert c.writer is not None
            c.writer.close()
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_server(src: str | None, runner: str) -> tuple[int, subprocess.Popen[bytes]]:
    port = _free_port()
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the other tree as it is
    data_dir = f"/tmp/bench-media-socket-{os.getpid()}-{port}"
    cmd = ["taskset", "-c", str(SERVER_CORE), sys.executable, __file__, "--serve", str(port)]
    cmd += ["--runner", runner, "--data-dir", data_dir]
    return port, subprocess.Popen(cmd, env=env)


def _wait_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120  # imports are slow on a loaded machine
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)


def run_one(n: int, args: argparse.Namespace) -> list[dict[str, object]]:
    trees: list[tuple[str, str | None]] = [("this tree", None)]
    if args.against:
        trees.append((args.against, args.against))
    started = [(label, *_start_server(src, args.runner)) for label, src in trees]
    try:
        for _, port, proc in started:
            _wait_listening(port, proc)
        os.sched_setaffinity(0, {CLIENT_CORE})
        servers = [(label, port, proc.pid) for label, port, proc in started]
        return asyncio.run(measure(servers, n, args.seconds))
    finally:
        for _, _, proc in started:
            proc.terminate()
        for _, _, proc in started:
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("calls", type=int, nargs="*", default=[50, 200])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runner", choices=["sink", "loopback", "talk"], default="sink")
    parser.add_argument("--against", help="also run a server from this source tree, paired")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.runner, args.data_dir)
        return
    for _ in range(args.repeat):
        for n in args.calls:
            for row in run_one(n, args):
                print(json.dumps({"runner": args.runner, **row}), flush=True)


if __name__ == "__main__":
    main()
