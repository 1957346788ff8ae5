"""Real ``callbridge serve`` processes for the deploy tests: started as a deployer would
(environment only), signalled like an orchestrator, their exit codes and logs kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "ACCOUNT_SID",
    "API_TOKEN",
    "AUTH_TOKEN",
    "SHORT_ASSISTANT",
    "SHORT_AUDIO_MS",
    "ServerProcess",
    "free_port",
    "server_env",
]

ROOT = Path(__file__).resolve().parents[2]
AUTH_TOKEN = "d" * 32
ACCOUNT_SID = "AC" + "2" * 32
API_TOKEN = "api-token-" + "x" * 16
STREAM_SECRET = "s" * 32
FAKE_ASSISTANT = ROOT / "examples" / "assistant-fake.yaml"
SHORT_ASSISTANT = Path(__file__).with_name("assistant-short.yaml")
SHORT_AUDIO_MS = (10 + 12) * 60  # its greeting and one answer, as the fake TTS makes them
_SETTINGS_PREFIXES = ("TWILIO_", "CALLBRIDGE_", "PUBLIC_URL", "DATABASE_URL", "LOG_", "TRUSTED_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(data_dir: Path, twilio_api: str, **extra: str) -> dict[str, str]:
    """The process environment minus the developer's settings, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS_PREFIXES)}
    env.update(
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_API_BASE_URL=twilio_api,
        CALLBRIDGE_STREAM_SECRET=STREAM_SECRET,
        CALLBRIDGE_API_TOKEN=API_TOKEN,
        CALLBRIDGE_DATA_DIR=str(data_dir),
        CALLBRIDGE_ASSISTANT=str(FAKE_ASSISTANT),
        CALLBRIDGE_HOST="127.0.0.1",
        LOG_FORMAT="json",
    )
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    """One ``callbridge serve`` (or a ``--workers`` group) on its own port."""

    env: dict[str, str]
    log_path: Path
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> subprocess.Popen[bytes]:
        env = {**self.env, "CALLBRIDGE_PORT": str(self.port)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "callbridge.cli", "serve", *self.args],
                cwd=self.log_path.parent,
                env=env,
                stdout=log,
                stderr=log,
            )
        return self.proc

    async def start(self, timeout_s: float = 60.0) -> None:
        """Spawn and wait until ``/readyz`` says 200."""
        proc = self.spawn()
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
            while True:
                try:
                    if (await client.get(f"{self.base_url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, f"server exited:\n{self.log_tail()}"
                assert time.monotonic() < deadline, f"server not ready:\n{self.log_tail()}"
                await asyncio.sleep(0.05)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"server still running:\n{self.log_tail()}"
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to the server and, for ``--workers``, to each worker (they run in
        process groups of their own)."""
        if self.proc is None:
            return
        for pid in [*_children(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """The structured log lines of event ``name`` (``drain.started`` …)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == name:
                out.append(record)
        return out


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out
