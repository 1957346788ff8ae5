"""``callbridge serve``: one clear line on bad config; otherwise the webhook URL, then serve."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from callbridge.cli import build_parser, main

from .test_server_settings import VARS


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in VARS:
        monkeypatch.delenv(var, raising=False)


def test_missing_token_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "TWILIO_AUTH_TOKEN" in err and "Traceback" not in err


def test_malformed_setting_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t" * 32)
    monkeypatch.setenv("PUBLIC_URL", "not a url")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.startswith("callbridge: configuration error: PUBLIC_URL")


def test_parser_has_serve() -> None:
    args = build_parser().parse_args(["serve", "--port", "9999"])
    assert (args.command, args.port, args.host) == ("serve", 9999, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_prints_the_webhook_url_and_serves(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    env.update(
        TWILIO_AUTH_TOKEN="t" * 32,
        PUBLIC_URL="https://calls.example.com",
        CALLBRIDGE_HOST="127.0.0.1",
        CALLBRIDGE_PORT=str(port),
        CALLBRIDGE_DATA_DIR=str(tmp_path / "data"),
        CALLBRIDGE_ASSISTANT=str(Path(__file__).parents[2] / "examples" / "assistant.yaml"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "callbridge.cli", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(3)]
        assert "Webhook (HTTP POST): https://calls.example.com/voice" in "".join(banner)
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False)
                break
            except httpx.ConnectError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.05)
        assert resp.json()["status"] == "ok"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in err
    assert "t" * 32 not in err  # the token never reaches the log
    assert (tmp_path / "data" / "stream_secret").exists()


def test_sqlite_is_one_instance_and_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t" * 32)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CALLBRIDGE_WORKERS", raising=False)
    assert main(["serve", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "SQLite" in err and "DATABASE_URL" in err and err.count("\n") == 1
