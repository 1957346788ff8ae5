"""The turn, as a caller feels it: last voiced frame → first bot audio, over vendors that
take as long as real ones (DESIGN.md §9, issue 12).

    .venv/bin/python bench/latency.py                  # 1, 10 and 50 calls + the pauses
    .venv/bin/python bench/latency.py 1 10 --duration 30 --no-pauses
    .venv/bin/python bench/latency.py --connection-ms 0   # vendors on loopback

The seed assistant (examples/assistant-seed.yaml: Deepgram, OpenAI, ElevenLabs) runs with
its real clients against the wire-level fakes (bench/latency_fakes.py: Deepgram's final
``endpointing`` + 100 ms after speech, Finalize in 100 ms, LLM first token 80 ms, TTS
first audio 60 ms, 150 ms for every new connection). The server is pinned to core 0; the
fakes and the lean callers (``callbridge.simulator.lean``) to core 1. Each caller hears
the greeting out, then asks a question and hears the answer, again and again; the figure
is the simulator's turn latency, on the caller's clock. The pause rows say the question
with a pause in the middle ("I would like to check the … balance on my account."):
"cut" counts the turns where the caller heard the bot (or got a ``clear``) before
finishing the sentence. The server's ``CALLBRIDGE_MAX_CALLS`` is set to the row's call
count (``--max-calls`` overrides it, 0 = no limit); a call it turns away at capacity is
counted as refused, apart from the failed ones. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from callbridge.audio import ulaw
from callbridge.errors import CallbridgeError
from callbridge.providers.tts.espeak import synthesize_pcm
from callbridge.simulator import voice
from callbridge.simulator.dialer import CallOptions, dial, sign
from callbridge.simulator.lean import LeanCall, Script
from callbridge.simulator.leanws import Handshake
from callbridge.simulator.load import (
    CLIENT_CORE,
    CLIENT_LAG_LIMIT_MS,
    SERVER_CORE,
    _free_port,
    _stop,
    _wait_port,
    cpu_pct,
    proc_sample,
)
from callbridge.simulator.loadworker import LeanConnection, Scheduler, refused_at_voice
from callbridge.simulator.metrics import percentile
from callbridge.simulator.wire import new_sid

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-latency-token-0123456789"
QUESTION = "What is my balance please?"
PAUSE_PARTS = ("I would like to check the", "balance on my account.")
GOAL_P50_MS, GOAL_P95_MS = 400.0, 500.0


@dataclass
class Row:
    name: str
    calls: int
    latencies: list[float] = field(default_factory=list)
    turns: int = 0
    cut: int = 0
    failed: int = 0
    refused: int = 0
    overflow_logged: int = 0  # the server's own count: webhook/stream.overflow lines
    why: set[str] = field(default_factory=set)
    counts: dict[str, Any] = field(default_factory=dict)
    server_log: str = ""
    send_lag_ms: list[float] = field(default_factory=list)
    server_cpu_pct: float | None = None
    fakes_cpu_pct: float | None = None

    def line(self) -> str:
        p50, p95 = percentile(self.latencies, 50), percentile(self.latencies, 95)
        conns = self.counts.get("elevenlabs_sockets")
        per_call = f"{conns / self.calls:.1f}" if isinstance(conns, int) else "-"
        lag = percentile(self.send_lag_ms, 99)
        bound = "CLIENT" if lag is None or lag > CLIENT_LAG_LIMIT_MS else "server"
        cpu = "-" if self.server_cpu_pct is None else f"{self.server_cpu_pct:.0f}"
        if self.fakes_cpu_pct is not None:
            cpu += f" / {self.fakes_cpu_pct:.0f}"
        return (f"| {self.name} | {self.calls} | {len(self.latencies)} | {_ms(p50)} | "
                f"{_ms(p95)} | {self.cut}/{self.turns} | {per_call} | {self.failed} | "
                f"{self.refused} | {cpu} | "
                f"{_ms(lag)} {bound} |")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def paused_question(pause_ms: int) -> voice.Utterance:
    """The two halves, trimmed to their voiced frames, ``pause_ms`` of silence between."""
    halves = [voice.from_pcm(synthesize_pcm(text, 8000), 8000, text) for text in PAUSE_PARTS]
    frames: list[bytes] = [voice.SILENCE.frames[0]] * 5
    for i, half in enumerate(halves):
        assert half.onset_index is not None and half.end_index is not None
        if i:
            frames += [voice.SILENCE.frames[0]] * (pause_ms // 20)
        frames += half.frames[half.onset_index : half.end_index + 1]
    frames += [voice.SILENCE.frames[0]] * 5
    pcm = b"".join(ulaw.decode(f) for f in frames)
    return voice.from_pcm(pcm, 8000, f"pause {pause_ms} ms")


def cut_turns(call: LeanCall) -> int:
    """Turns where the caller heard the bot start (or got ``clear``) mid-sentence."""
    cut = 0
    starts = call.playback.speech_starts
    for turn in call.tracker.turns:
        if turn.end_s is None:
            continue
        if any(turn.onset_s < s < turn.end_s for s in starts):
            cut += 1
    return cut


async def one_call(
    http: httpx.AsyncClient, scheduler: Scheduler, url: str, delay_s: float, script: Script
) -> LeanCall | dict[str, Any] | str:
    """The call, or a refusal at ``/voice`` (its result dict), or why it failed."""
    await asyncio.sleep(delay_s)
    options = CallOptions(url, TOKEN)
    loop = asyncio.get_running_loop()
    try:
        plan = await dial(options, http)
        if plan.stream_url is None:
            return refused_at_voice(plan) if plan.hangup else "the TwiML names no <Stream>"
        headers = {"X-Twilio-Signature": sign(TOKEN, plan.stream_url),
                   "User-Agent": "Twilio.TmeWs/1.0"}
        handshake = Handshake(options.connect_url(plan.stream_url), headers)
        call = LeanCall(script, stream_sid=new_sid("MZ"), account_sid=options.account_sid,
                        call_sid=options.call_sid, parameters=plan.parameters)
        conn = LeanConnection(call, handshake)
        await loop.create_connection(lambda: conn, handshake.host, handshake.port)
        async with asyncio.timeout(10):
            await conn.opened
        scheduler.add(conn)
        await conn.finished
        if call.ended_by == "caller":
            conn.send([call.closing()])
            conn.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await conn.closed
        conn.abort()
        return call
    except (CallbridgeError, OSError, TimeoutError, httpx.HTTPError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def place_calls(
    url: str, n: int, question: voice.Utterance, duration_s: float
) -> list[LeanCall | dict[str, Any] | str]:
    scheduler = Scheduler()
    ticker = asyncio.create_task(scheduler.run())
    spread_s = 0.05 * n  # arrivals spread like real calls (2.5 s at 50)
    async with httpx.AsyncClient(timeout=10.0) as http:
        results = await asyncio.gather(*(
            one_call(http, scheduler, url, spread_s * i / n,
                     Script(question, question, duration_s, barge_in=False))
            for i in range(n)
        ))
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    return list(results)


def run_row(row: Row, question: voice.Utterance, transcripts: list[str],
            args: argparse.Namespace) -> Row:
    """Fresh fakes and a fresh server, ``row.calls`` callers, their figures merged."""
    with contextlib.ExitStack() as stack:
        fakes_cmd = [sys.executable, str(ROOT / "bench" / "latency_fakes.py"), *transcripts,
                     "--connection-ms", str(args.connection_ms), "--core", str(CLIENT_CORE)]
        fakes = subprocess.Popen(fakes_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        stack.callback(_stop_fakes, fakes, row)
        assert fakes.stdout is not None
        vendor_env = json.loads(fakes.stdout.readline())
        port = _free_port()
        env = {
            **os.environ, **vendor_env,
            "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_ACCOUNT_SID": "",
            "CALLBRIDGE_ASSISTANT": str(_assistant(args.end_of_turn)),
            "CALLBRIDGE_DATA_DIR": tempfile.mkdtemp(prefix="callbridge-latency-"),
            "CALLBRIDGE_STREAM_SECRET": "bench-stream-secret-0123456789",
            "LOG_LEVEL": args.log_level, "PUBLIC_URL": "",
            # The limit must fit the run, or the row measures refusals (default 30).
            "CALLBRIDGE_MAX_CALLS": str(row.calls if args.max_calls is None else args.max_calls),
        }
        server_cmd = ["taskset", "-c", str(SERVER_CORE), sys.executable, "-m", "callbridge.cli",
                      "serve", "--host", "127.0.0.1", "--port", str(port)]
        log: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
        server = subprocess.Popen(server_cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        stack.callback(_stop, server)
        _wait_port(port, server)
        time.sleep(0.5)
        before, fakes_before = proc_sample([server.pid]), proc_sample([fakes.pid])
        results = asyncio.run(place_calls(f"http://127.0.0.1:{port}", row.calls, question,
                                          args.duration))
        row.server_cpu_pct = cpu_pct(before, proc_sample([server.pid]))
        row.fakes_cpu_pct = cpu_pct(fakes_before, proc_sample([fakes.pid]))
        for result in results:
            if isinstance(result, str):
                row.failed += 1
                row.why.add(result)
                continue
            if isinstance(result, dict):  # turned away at /voice
                row.refused += 1
                row.why.add(str(result["why"]))
                continue
            outcome = result.result()
            row.send_lag_ms += result.send_lag_ms
            row.latencies += outcome["latency_ms"]  # type: ignore[operator]
            row.turns += sum(1 for t in result.tracker.turns if t.end_s is not None)
            row.cut += cut_turns(result)
            if outcome["refused"]:
                row.refused += 1
                row.why.add(str(outcome["why"]))
            elif not outcome["ok"]:
                row.failed += 1
                row.why.add(str(outcome["why"]))
        log.seek(0)
        row.overflow_logged = sum(
            1 for line in log.read().decode(errors="replace").splitlines()
            if "webhook.overflow" in line or "stream.overflow" in line
        )
        if args.server_log:
            log.seek(0)
            with open(args.server_log, "ab") as keep:
                keep.write(log.read())
        if row.failed or row.refused:
            log.seek(0)
            row.server_log = "\n".join(log.read().decode(errors="replace").splitlines()[-15:])
    return row


def _assistant(end_of_turn: str | None) -> Path:
    """The seed assistant, with ``turnTaking.endOfTurn`` replaced when asked."""
    seed = ROOT / "examples" / "assistant-seed.yaml"
    if end_of_turn is None:
        return seed
    config = yaml.safe_load(seed.read_text())
    config.setdefault("turnTaking", {})["endOfTurn"] = end_of_turn
    path = Path(tempfile.mkdtemp(prefix="callbridge-latency-")) / "assistant.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _stop_fakes(fakes: subprocess.Popen[str], row: Row) -> None:
    assert fakes.stdin is not None and fakes.stdout is not None
    fakes.stdin.close()
    with contextlib.suppress(ValueError):
        row.counts = json.loads(fakes.stdout.readline() or "{}")
    try:
        fakes.wait(timeout=10)
    except subprocess.TimeoutExpired:
        fakes.kill()
        fakes.wait()


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/latency.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("counts", nargs="*", type=int, default=[1, 10, 50])
    parser.add_argument("--duration", type=float, default=40.0, help="seconds per call")
    parser.add_argument("--connection-ms", type=float, default=150.0)
    parser.add_argument("--pauses", type=int, nargs="*", default=[400, 600])
    parser.add_argument("--no-pauses", action="store_true")
    parser.add_argument("--log-level", default="WARNING", help="the server's")
    parser.add_argument("--end-of-turn", choices=["lexical", "smart-turn", "off"],
                        help="override the seed assistant's turnTaking.endOfTurn")
    parser.add_argument("--server-log", type=Path, help="append the server's log here")
    parser.add_argument("--max-calls", type=int, default=None,
                        help="the server's CALLBRIDGE_MAX_CALLS (default: the row's calls)")
    args = parser.parse_args()
    with contextlib.suppress(OSError):  # the parent must not take the server's core
        os.sched_setaffinity(0, {CLIENT_CORE})
    question = voice.from_text(QUESTION)
    rows = []
    for n in args.counts:
        row = run_row(Row(f"question, {n} call(s)", n), question, [QUESTION], args)
        print(row.line(), row.counts, file=sys.stderr, flush=True)
        rows.append(row)
    for pause_ms in [] if args.no_pauses else args.pauses:
        row = run_row(Row(f"pause {pause_ms} ms mid-sentence, 1 call", 1),
                      paused_question(pause_ms), list(PAUSE_PARTS), args)
        print(row.line(), file=sys.stderr, flush=True)
        rows.append(row)
    print(f"\nturn latency, seed assistant (endOfTurn: {args.end_of_turn or 'as in the file'}), "
          f"new vendor connection {args.connection_ms:g} ms "
          f"(goal p50 ≤ {GOAL_P50_MS:g}, p95 ≤ {GOAL_P95_MS:g} ms)")
    print("| scenario | calls | turns measured | p50 ms | p95 ms | bot over caller "
          "| TTS sockets/call | failed calls | refused calls | CPU % server / fakes "
          "| caller lag p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row.line())
    print(f"bot over caller: turns where the caller heard the bot start (or got clear) before "
          f"finishing its sentence (the cut, in the pause rows). CLIENT: the callers' send "
          f"lag p99 > {CLIENT_LAG_LIMIT_MS:g} ms, the load generator (callers + vendor fakes, "
          f"one core) fell behind and the row measures it, not the server.")
    for row in rows:
        if row.refused or row.overflow_logged:
            print(f"{row.name}: {row.refused} call(s) refused at capacity; the server logged "
                  f"{row.overflow_logged} overflow(s) (CALLBRIDGE_MAX_CALLS too low for the run)")
    for row in rows:
        if row.why:
            print(f"{row.name}: {sorted(row.why)[:3]}\nserver log, last lines:\n{row.server_log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
