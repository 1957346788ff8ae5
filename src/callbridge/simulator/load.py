"""The load benchmark: N concurrent simulated calls against a server on one core.

How it works: for each N a fresh server (``callbridge serve`` with the fake-provider
assistant) starts pinned to core 0 with ``taskset``; worker processes pinned to the
other core place the calls (spread over a few seconds, as real calls arrive), each
alternating a fully heard question with a barge-in, for a fixed duration. The parent
samples the server's CPU time and RSS from ``/proc`` and merges the workers' figures.
The workers check themselves: their own send-loop lag is reported, so a saturated load
generator is visible rather than blamed on the server. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import WebSocketException

__all__ = ["main"]

DEFAULT_COUNTS = (10, 50, 100, 200)
BENCH_TOKEN = "bench-auth-token-0123456789"
SERVER_CORE = "0"
CLIENT_CORE = "1"
CALLS_PER_WORKER = 50
JITTER_LIMIT_MS = 10.0
QUESTION = "Hello, I would like to check my bill please."
INTERRUPTION = "Wait, stop, I have another question."
_LOUD = bytes(1 if _b < 0x70 or 0x80 <= _b < 0xF0 else 0 for _b in range(256))


def fast_audible(ulaw_audio: bytes) -> bool:
    """Any sample louder than ~-40 dBFS peak (μ-law codes below 0x70/0xF0); a table
    lookup, so 10 000 frames a second cost the load generator almost nothing."""
    return b"\x01" in ulaw_audio.translate(_LOUD)


# ------------------------------------------------------------ worker (client process)


async def _one_call(url: str, delay_s: float, duration_s: float, voices: Any) -> dict[str, Any]:
    from callbridge.simulator.caller import LiveCall
    from callbridge.simulator.dialer import CallOptions, CallRefused, dial

    await asyncio.sleep(delay_s)
    options = CallOptions(url, BENCH_TOKEN)
    result: dict[str, Any] = {"ok": False, "why": ""}
    try:
        plan = await dial(options)
        async with LiveCall(plan, options, classify=fast_audible) as call:
            speaking = lambda: call.playback.speaking  # noqa: E731
            quiet = lambda: call.bot_silent_for_s() >= 0.6  # noqa: E731
            await call.wait_until(speaking, 5.0)  # the greeting, if any
            await call.wait_until(quiet, 15.0)
            end = time.monotonic() + duration_s
            turn = 0
            while time.monotonic() < end and not call.ended:
                await call.say(voices[0])
                if turn % 2 == 0:
                    await call.wait_until(speaking, 5.0)
                    await call.wait_until(quiet, 15.0)
                else:
                    if await call.wait_until(lambda: call.playback.reply_played_ms >= 800, 5.0):
                        await call.say(voices[1])
                    await call.wait_until(quiet, 15.0)
                turn += 1
            ended_by_server = call.ended
        report = call.report()
    except (CallRefused, OSError, TimeoutError, httpx.HTTPError, WebSocketException) as exc:
        result["why"] = f"{type(exc).__name__}: {exc}"
        return result
    problems = list(report.protocol_errors)
    if ended_by_server:
        problems.append("the server ended the call")
    if report.bot_audio_ms == 0:
        problems.append("no bot audio")
    result.update(
        ok=not problems,
        why="; ".join(problems),
        latency_ms=[t.latency_ms for t in report.turns if t.latency_ms is not None],
        bargein_ms=[t.bargein_ms for t in report.turns if t.barge_in and t.bargein_ms],
        stale_ms=[t.stale_ms for t in report.turns if t.barge_in],
        jitter_ms=[round(j, 1) for j in report.jitter_ms],
        underruns=report.underruns,
        send_lag_ms=[round(v, 1) for v in report.send_lag_ms],
        turns=len(report.turns),
    )
    return result


async def _worker(
    url: str, calls: int, duration_s: float, spread_s: float, offset: int, total: int
) -> None:
    """Call ``offset + i`` of ``total`` starts at ``spread_s * (offset + i) / total``."""
    from callbridge.simulator import voice

    voices = (voice.from_text(QUESTION), voice.from_text(INTERRUPTION))
    tasks = [
        _one_call(url, spread_s * (offset + i) / total, duration_s, voices) for i in range(calls)
    ]
    results = await asyncio.gather(*tasks)
    json.dump(results, sys.stdout)


# ------------------------------------------------------------ parent


@dataclass
class _Sample:
    at_s: float
    cpu_s: float
    rss_kib: int


@dataclass
class RunResult:
    calls: int
    cpu_pct: float = 0.0
    rss_mib: float = 0.0
    rss_idle_mib: float = 0.0
    results: list[dict[str, Any]] = field(default_factory=list)

    def merged(self, key: str) -> list[float]:
        return [v for r in self.results for v in r.get(key, [])]

    @property
    def failed(self) -> int:
        return sum(not r["ok"] for r in self.results)

    def row(self) -> dict[str, Any]:
        from callbridge.simulator.metrics import percentile

        def p(key: str, q: float) -> float | None:
            value = percentile(self.merged(key), q)
            return None if value is None else round(value, 1)

        return {
            "calls": self.calls,
            "server_cpu_pct": round(self.cpu_pct, 1),
            "rss_mib": round(self.rss_mib, 1),
            "rss_per_call_kib": round((self.rss_mib - self.rss_idle_mib) * 1024 / self.calls, 1),
            "jitter_p50_ms": p("jitter_ms", 50),
            "jitter_p99_ms": p("jitter_ms", 99),
            "turn_p50_ms": p("latency_ms", 50),
            "turn_p95_ms": p("latency_ms", 95),
            "bargein_p95_ms": p("bargein_ms", 95),
            "underruns": sum(r.get("underruns", 0) for r in self.results),
            "failed": self.failed,
            "client_lag_p99_ms": p("send_lag_ms", 99),
            "why": sorted({r["why"] for r in self.results if r["why"]})[:3],
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _proc_sample(pid: int) -> _Sample:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss_kib = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return _Sample(time.monotonic(), cpu_s, rss_kib)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server did not listen on port {port} within {timeout_s:g} s")


def run_level(n: int, args: argparse.Namespace) -> RunResult:
    """One N: a fresh server, N calls, the server sampled every 0.5 s."""
    port = _free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": BENCH_TOKEN,
        "TWILIO_ACCOUNT_SID": "",
        "CALLBRIDGE_ASSISTANT": str(args.assistant),
        "CALLBRIDGE_DATA_DIR": tempfile.mkdtemp(prefix="callbridge-bench-"),
        "CALLBRIDGE_STREAM_SECRET": "bench-stream-secret-0123456789",
        "LOG_LEVEL": "WARNING",
        "PUBLIC_URL": "",
    }
    server_cmd = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "callbridge.cli", "serve"]
    server_cmd += ["--host", "127.0.0.1", "--port", str(port)]
    result = RunResult(n)
    spread_s = args.spread * n / max(DEFAULT_COUNTS)
    with contextlib.ExitStack() as stack:
        server = subprocess.Popen(
            server_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        stack.callback(_stop, server)
        _wait_port(port, server)
        time.sleep(0.5)
        idle = _proc_sample(server.pid)
        result.rss_idle_mib = idle.rss_kib / 1024
        workers = []
        offset = 0
        for size in _chunks(n, CALLS_PER_WORKER):
            cmd = ["taskset", "-c", CLIENT_CORE, sys.executable, "-m", "callbridge.simulator.load"]
            cmd += ["--worker", f"http://127.0.0.1:{port}", str(size), str(args.duration)]
            cmd += [str(spread_s), str(offset), str(n)]
            # A file, not a pipe: the figures outgrow a pipe's buffer and the worker
            # would block on its last write while the parent polls.
            out = stack.enter_context(tempfile.TemporaryFile())
            worker = subprocess.Popen(cmd, stdout=out)
            stack.callback(_stop, worker)
            workers.append((worker, out))
            offset += size
        samples = [idle]
        deadline = time.monotonic() + args.duration + spread_s + 120.0
        while any(w.poll() is None for w, _ in workers) and time.monotonic() < deadline:
            time.sleep(0.5)
            samples.append(_proc_sample(server.pid))
        for worker, out in workers:
            _stop(worker)
            out.seek(0)
            try:
                result.results += json.loads(out.read() or b"[]")
            except ValueError:
                result.results.append({"ok": False, "why": "worker output unreadable"})
    missing = n - len(result.results)
    result.results += [{"ok": False, "why": "no result from its worker"}] * missing
    # CPU over the steady middle: after every call is up, before the first ends.
    begin = idle.at_s + spread_s + 3.0
    end = begin + max(1.0, args.duration - 4.0)
    window = [s for s in samples if begin <= s.at_s <= end] or samples
    if len(window) >= 2 and (dt := window[-1].at_s - window[0].at_s) > 0:
        result.cpu_pct = 100.0 * (window[-1].cpu_s - window[0].cpu_s) / dt
    result.rss_mib = max(s.rss_kib for s in samples) / 1024
    return result


def _chunks(n: int, size: int) -> list[int]:
    return [size] * (n // size) + ([n % size] if n % size else [])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process this benchmark started (by its own handle, never by name)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("calls", "N"),
        ("server_cpu_pct", "CPU %"),
        ("rss_mib", "RSS MiB"),
        ("rss_per_call_kib", "KiB/call"),
        ("jitter_p50_ms", "jit p50"),
        ("jitter_p99_ms", "jit p99"),
        ("turn_p50_ms", "turn p50"),
        ("turn_p95_ms", "turn p95"),
        ("bargein_p95_ms", "barge p95"),
        ("underruns", "underruns"),
        ("failed", "failed"),
        ("client_lag_p99_ms", "client lag p99"),
    ]
    lines = ["| " + " | ".join(title for _, title in cols) + " |"]
    lines.append("|" + "|".join("---:" for _ in cols) + "|")
    for row in rows:
        cells = ["-" if row[key] is None else str(row[key]) for key, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--worker":
        url, calls, duration, spread, offset, total = argv[1:7]
        asyncio.run(
            _worker(url, int(calls), float(duration), float(spread), int(offset), int(total))
        )
        return 0
    parser = argparse.ArgumentParser(prog="bench/load.py", description=__doc__)
    parser.add_argument("counts", nargs="*", type=int, default=list(DEFAULT_COUNTS))
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per call")
    parser.add_argument("--spread", type=float, default=4.0, help="arrival spread at N=200 (s)")
    parser.add_argument("--assistant", type=Path, default=Path("examples/assistant-fake.yaml"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if any(n < 1 or n > 1000 for n in args.counts):
        parser.error("each N must be between 1 and 1000")
    rows = []
    for n in args.counts:
        rows.append(run_level(n, args).row())
        if not args.json:
            print(f"N={n} done: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    good = [
        r["calls"]
        for r in rows
        if r["failed"] == 0
        and r["jitter_p99_ms"] is not None
        and r["jitter_p99_ms"] < JITTER_LIMIT_MS
    ]
    best = max(good, default=None)
    if args.json:
        print(json.dumps({"levels": rows, "max_calls_ok": best}, indent=2))
    else:
        print(_table(rows))
        verdict = best if best is not None else "none"
        print(f"\nlargest N with p99 jitter < {JITTER_LIMIT_MS:g} ms and no failed call: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
