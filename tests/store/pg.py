"""A PostgreSQL server for the store's tests: the one ``make test`` started, or our own.

``scripts/test-postgres.sh`` installs PostgreSQL when it is missing and starts a
throwaway server on 127.0.0.1. Each test gets its own database on it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg


class NoPostgres(Exception):
    """PostgreSQL could not be installed or started; the message says why."""


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test-postgres.sh"
START_TIMEOUT_S = 900  # a first run may apt-get install PostgreSQL


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the server's asyncpg URL; the reason there is none as a ``NoPostgres``."""
    if url := os.environ.get("CALLBRIDGE_TEST_POSTGRES_URL"):
        yield url
        return
    if reason := os.environ.get("CALLBRIDGE_TEST_POSTGRES_SKIP"):
        raise NoPostgres(reason)
    done = subprocess.run(
        ["bash", str(SCRIPT), "start"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise NoPostgres(done.stderr.strip()[-2000:] or f"exit code {done.returncode}")
    url, folder = done.stdout.split()
    try:
        yield url
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", folder], check=False, timeout=60)


async def fresh_database(server_url: str) -> str:
    """Create an empty database on the server; returns its asyncpg URL."""
    name = "t_" + secrets.token_hex(6)
    admin = await asyncpg.connect(_plain(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class OwnPostgres:
    """A server of this test's own, which it may stop and start (an outage) at will."""

    def __init__(self, url: str, folder: str) -> None:
        self.url = url
        self.folder = folder

    async def halt(self) -> None:
        """Stop the server (fast shutdown: sessions are cut), keeping its data and port."""
        await self._script("halt")

    async def resume(self) -> None:
        await self._script("resume")

    async def _script(self, action: str) -> None:
        # Not subprocess.run: the server under test shares this event loop.
        proc = await asyncio.create_subprocess_exec(
            "bash", str(SCRIPT), action, self.folder, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"test-postgres.sh {action} failed: {err.decode()[-2000:]}")


@contextmanager
def own_postgres_server() -> Iterator[OwnPostgres]:
    """A throwaway server started for the caller alone; ``NoPostgres`` when none can be."""
    if reason := os.environ.get("CALLBRIDGE_TEST_POSTGRES_SKIP"):
        raise NoPostgres(reason)
    done = subprocess.run(
        ["bash", str(SCRIPT), "start"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise NoPostgres(done.stderr.strip()[-2000:] or f"exit code {done.returncode}")
    url, folder = done.stdout.split()
    try:
        yield OwnPostgres(url, folder)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", folder], check=False, timeout=60)
