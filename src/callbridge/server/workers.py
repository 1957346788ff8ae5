"""``callbridge serve --workers N``: N full instances on one port, one per core.

Each worker is an ordinary ``callbridge serve`` process (its own event loop, store writer
and control channel) that binds the port with ``SO_REUSEPORT``, so the kernel spreads new
connections across them and no byte passes through this supervisor. The supervisor only
starts them, restarts one that dies unasked, and passes SIGTERM/SIGINT on: each worker
then drains its own calls, and the group exits 0 when all have.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from callbridge.telemetry.logging import log_event

__all__ = ["default_workers", "reserve_port", "supervise", "worker_command"]

log = logging.getLogger(__name__)

_POLL_S = 0.1
_PR_SET_PDEATHSIG = 1
_RESTART_PAUSE_S = 1.0


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def reserve_port(host: str, port: int) -> tuple[int, socket.socket]:
    """Pick the port (a free one for 0) and hold it bound, not listening, so nobody else
    takes it; a socket that does not listen receives none of the workers' connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return int(sock.getsockname()[1]), sock


def supervise(count: int, worker_argv: Sequence[str], env: dict[str, str]) -> int:
    """Run ``count`` copies of ``worker_argv`` until a signal and their drain; 0 if all
    drained cleanly."""
    stopping: list[int] = []

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        stopping.append(sig)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(sig)  # the second one makes the workers stop at once

    def start() -> subprocess.Popen[bytes]:
        # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
        # passes it on once (a worker that got it twice would stop without draining).
        return subprocess.Popen(
            list(worker_argv), env=env, preexec_fn=_drain_with_parent, process_group=0
        )

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    procs = [start() for _ in range(count)]
    log_event(
        log, logging.INFO, "workers.started", count=count, pids=",".join(str(p.pid) for p in procs)
    )
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(_POLL_S)
            if stopping:
                continue
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    log_event(
                        log, logging.ERROR, "workers.died", pid=proc.pid, code=proc.returncode
                    )
                    time.sleep(_RESTART_PAUSE_S)
                    procs[i] = start()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    codes = [p.returncode for p in procs]
    log_event(log, logging.INFO, "workers.stopped", codes=",".join(map(str, codes)))
    return 0 if all(c == 0 for c in codes) else 1


def _drain_with_parent() -> None:
    """In the child, before exec: SIGTERM (a drain) when the supervisor dies, even by
    SIGKILL, so no worker is left orphaned (Linux ``PR_SET_PDEATHSIG``)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_command(args: Sequence[str]) -> list[str]:
    """The command line of one worker: this program's ``serve``, one worker, shared port."""
    cli = [sys.executable, "-m", "callbridge.cli", "serve"]
    return [*cli, *args, "--workers", "1", "--reuse-port"]
