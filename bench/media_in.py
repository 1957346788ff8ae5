"""Instructions per inbound Media Streams ``media`` message, socket bytes to the call's
``Line``, in process: what bench/media_socket.py measures in CPU time, without the
kernel, the other core and the machine's drift, so callgrind can count it.

    .venv/bin/python bench/media_in.py --messages 20000 --and 20000   # µs/message (noisy)
    OPENBLAS_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file=/tmp/in.a \
        .venv/bin/python bench/media_in.py --messages 2000
    # the same with ``--messages 2000 --and 10000`` into /tmp/in.b; then
    # (summary of /tmp/in.b - summary of /tmp/in.a) / 10000 = instructions per message

N ``MediaSocket``s (``create_app``'s edge, uvicorn's config, exactly what production
builds) get the upgrade, ``connected`` and a ``start`` with a valid token through
``data_received`` on a transport that only counts what is written; a sink runner holds
each call's ``Line`` (the engine's metronome would take its frames: here they are
dropped every round, so no backlog cap is reached). Then every call gets a 20 ms
``media`` message a round, Twilio's exact bytes, one ``data_received`` each, on a
manual clock advanced 20 ms a round (no pacing, no gap; the clock is a lambda, one
Python call a message that production's ``time.monotonic`` does not cost). ``--and M``
runs M more messages after the first part: two runs' callgrind totals differ by exactly
those M messages (imports, set-up and teardown cancel out), and the printed CPU per
message of a second part is past the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from uvicorn.server import ServerState

from callbridge.engine.transport import CallInfo, CallTransport, Inbox, Line
from callbridge.server.app import create_app, uvicorn_config
from callbridge.server.media_socket import MediaSocket
from callbridge.settings import load_settings
from callbridge.twilio.tokens import StreamTokens

SECRET = "bench-secret-" + "x" * 32
_BUILT = 400  # messages a call: 8 s of audio, more than --messages 2000 --and 10000 take


class CountingTransport:
    """The socket's far side: keeps nothing, counts the bytes written."""

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def client_frame(text: str) -> bytes:
    """A masked text frame (a zero mask: the payload goes as is, as RFC 6455 allows)."""
    payload = text.encode()
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


def media(stream: str, seq: int, ulaw_b64: str) -> bytes:
    return client_frame(
        json.dumps(
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
            separators=(",", ":"),
        )
    )


async def run(calls: int, parts: list[int]) -> list[float]:
    lines: list[Line] = []

    async def sink(info: CallInfo, transport: CallTransport, line: Line) -> None:
        Inbox[object]().attach(line, ticked=True)  # frames wait on the line, as an engine's
        lines.append(line)
        await asyncio.Event().wait()  # held until the bench ends (``asyncio.run`` cancels)

    now = [1000.0]
    settings = load_settings(
        auth_token="a" * 32,
        account_sid="AC" + "0" * 32,
        stream_secret=SECRET,
        data_dir=Path(tempfile.mkdtemp(prefix="bench-media-in-")),
        max_calls=0,
    )
    app = create_app(settings, sink)
    edge = app.state.edge
    edge.clock = lambda: now[0]
    config = uvicorn_config(app, "127.0.0.1", 8080, log_level="warning")
    config.load()
    state = ServerState()
    sockets: list[tuple[MediaSocket, str]] = []
    for i in range(calls):
        sock = MediaSocket(edge, config, state)
        sock.connection_made(CountingTransport())  # type: ignore[arg-type]
        key = base64.b64encode(os.urandom(16)).decode()
        sock.data_received(
            (
                "GET /media HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        call, stream = f"CA{i:032x}", f"MZ{i:032x}"
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream,
                "callSid": call,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"token": StreamTokens(SECRET).mint(call)},
            },
            "streamSid": stream,
        }
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        sock.data_received(client_frame(json.dumps(connected)) + client_frame(json.dumps(start)))
        sockets.append((sock, stream))
    for _ in range(5):
        await asyncio.sleep(0)
    if len(lines) != calls:
        raise RuntimeError(f"{len(lines)} of {calls} calls started")
    ulaw_b64 = base64.b64encode(bytes(range(160))).decode()
    # Built before the count starts, the same number whatever the run's length (so two
    # runs' set-up is the same): each call's next message, timestamps 20 ms apart.
    messages = [
        [media(stream, seq, ulaw_b64) for seq in range(2, 2 + _BUILT)] for _, stream in sockets
    ]
    feeds = [sock.data_received for sock, _ in sockets]
    spent: list[float] = []
    sent = 0
    for part in parts:
        rounds = max(1, part // calls)
        began = time.process_time()
        for r in range(rounds):
            now[0] += 0.020
            k = (sent // calls + r) % _BUILT  # (past them: from the first again, "reordered")
            for feed, own in zip(feeds, messages, strict=True):
                feed(own[k])
            for line in lines:
                line.frames.clear()  # the metronome's take
        spent.append((time.process_time() - began) / (rounds * calls))
        sent += rounds * calls
        print(f"part: {rounds * calls} messages", file=sys.stderr, flush=True)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--and", dest="more", type=int, default=0)
    args = parser.parse_args()
    parts = [args.messages] + ([args.more] if args.more else [])
    spent = asyncio.run(run(args.calls, parts))
    print(" ".join(f"{s * 1e6:.2f} µs/message" for s in spent))


if __name__ == "__main__":
    main()
