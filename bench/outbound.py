"""CPU of the bot's way out per call, one frame or two per ``media`` message (A/B in one
process, so a shared machine's noise hits both alike).

    .venv/bin/python bench/outbound.py                 # 100 calls, 1500 ticks, 3 rounds
    .venv/bin/python bench/outbound.py 200 --ticks 1000

N calls talk without end on virtual time: every 20 ms tick each call's ``Playout`` is
pulled (as the call's owner does on each wake-up) and what it gives goes through the
production ``TwilioTransport`` and ``text_frame`` into a real socket, read by a child
``cat``, so each message costs its real ``send()``. Only this process's CPU is counted:
the playout, the commands, the base64 and JSON, the frame and the syscall (the engine's
other work and the inbound path are elsewhere: ``calls.py``, ``media_socket.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import time

from callbridge.engine.events import SendAudio, SendMark
from callbridge.engine.playout import Playout
from callbridge.server.media_wire import text_frame
from callbridge.twilio.transport import TwilioTransport

SENTENCE = bytes(range(160)) * 100  # 2 s of audio, then a mark


async def _refuse(text: str) -> None:
    raise AssertionError("every write here is at once")


async def _close() -> None:
    pass


async def run(calls: int, ticks: int, frames_per_message: int) -> tuple[float, int]:
    """CPU seconds of ``ticks`` ticks of ``calls`` calls, and the audio messages sent."""
    cats, writers, lines = [], [], []
    for i in range(calls):
        ours, theirs = socket.socketpair()
        cats.append(await asyncio.create_subprocess_exec(
            "cat", stdin=theirs.fileno(), stdout=subprocess.DEVNULL))
        theirs.close()
        _, writer = await asyncio.open_connection(sock=ours)
        writers.append(writer)
        sock = writer.transport

        def write_now(utf8: bytes, sock: asyncio.WriteTransport = sock) -> bool:
            sock.write(text_frame(utf8))  # what ``MediaSocket.write_text_now`` does
            return True

        transport = TwilioTransport(stream_sid=f"MZ{i:032d}", call_sid=f"CA{i:032d}",
                                    send_text=_refuse, close=_close, write_now=write_now)
        lines.append((Playout(frames_per_message=frames_per_message), transport))
    now, said, messages = 100.0, 0, 0
    cpu0 = time.process_time()
    for _ in range(ticks):
        now += 0.02
        for playout, transport in lines:
            if playout.next_deadline() is None:  # all sent: the next sentence
                said += 1
                playout.begin_segment((1, said), "words")
                playout.add_audio((1, said), SENTENCE)
                playout.end_segment((1, said))
            for command in playout.pull(now):
                match command:
                    case SendAudio(ulaw=data):
                        await transport.send_audio(data)
                        messages += 1
                    case SendMark(name=name):
                        await transport.send_mark(name)
        await asyncio.sleep(0)  # the loop's turn (the socket buffers drain to the cats)
    cpu = time.process_time() - cpu0
    for writer in writers:
        writer.close()
        await writer.wait_closed()
    for cat in cats:
        await cat.wait()  # it ends at our EOF
    return cpu, messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("calls", type=int, nargs="?", default=100)
    parser.add_argument("--ticks", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.rounds):
        for frames in (1, 2):
            cpu, messages = asyncio.run(run(args.calls, args.ticks, frames))
            call_s = args.calls * args.ticks * 0.02
            print(
                f"{frames} frame(s)/message: {cpu * 1e6 / (args.calls * args.ticks):5.1f} µs "
                f"per call per 20 ms ({100 * cpu / call_s:.3f} % of a core per call), "
                f"{messages} audio messages",
                flush=True,
            )


if __name__ == "__main__":
    main()
