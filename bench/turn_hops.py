"""Where the turn's time goes, hop by hop, at each N of the seed-stack load benchmark.

    .venv/bin/python bench/turn_hops.py 1 40 80            # --duration 20 by default
    .venv/bin/python bench/turn_hops.py 1 40 40 80 80 --json

Runs ``bench/load.py --stack seed``'s levels (the same servers, callers and vendor fakes,
through ``callbridge.simulator.load.run_level``) and then reads every answer's hop marks
from the server's call records (``turns.latency_ms``, the ``hop_*`` keys: ms after the
caller's speech end as the server's VAD dated it; ``engine/replies.py``). It prints each
hop's p50/p95 per level, both from the speech end and as the step from the hop before,
next to the client's own turn (caller's last word → first audible bot frame), the
server's CPU and the client core's.

The marks: ``vad_silence`` the VAD said silence (the engine handled that frame);
``finalize`` Finalize sent; ``reply_start`` the answer asked for (held while speculative);
``llm_sent`` the reply task opened the model's stream; ``first_token`` its first text in
the task; ``first_segment`` the engine got the first sentence; ``tts_sent`` the task
asked TTS for it; ``tts_audio`` its first audio in the task; ``first_audio`` the engine got
it; ``final_words`` the final transcript that settled the turn; ``endpoint`` enough
silence; ``released`` a held answer let go; ``first_frame`` its first frame sent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from callbridge.simulator.load import CLIENT_CORE, run_level
from callbridge.simulator.metrics import percentile

ROOT = Path(__file__).resolve().parents[1]

HOPS = (
    "vad_silence",
    "finalize",
    "reply_start",
    "llm_sent",
    "first_token",
    "first_segment",
    "tts_sent",
    "tts_audio",
    "first_audio",
    "final_words",
    "endpoint",
    "released",
    "first_frame",
)
# Steps along the critical path of a speculative answer (each: later mark − earlier).
STEPS = (
    ("vad lag", None, "vad_silence"),
    ("silence → ask", "vad_silence", "reply_start"),
    ("ask → task opens LLM", "reply_start", "llm_sent"),
    ("LLM first token", "llm_sent", "first_token"),
    ("token → TTS asked", "first_token", "tts_sent"),
    ("TTS first audio", "tts_sent", "tts_audio"),
    ("task → engine (inbox)", "tts_audio", "first_audio"),
    ("engine → frame sent", "first_audio", "first_frame"),
    ("endpoint → released", "endpoint", "released"),
)


@contextlib.contextmanager
def seed_fakes() -> Iterator[int]:
    """``bench/seed_fakes.py`` on the client core, its env in ours; yields its pid."""
    cmd = ["taskset", "-c", str(CLIENT_CORE), sys.executable, str(ROOT / "bench/seed_fakes.py")]
    fakes = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert fakes.stdout is not None
        line = fakes.stdout.readline()
        if not line:
            raise RuntimeError("the vendor fakes did not start")
        os.environ.update(json.loads(line))
        yield fakes.pid
    finally:
        assert fakes.stdin is not None
        fakes.stdin.close()
        try:
            fakes.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fakes.kill()
            fakes.wait()


class RunQueueWait:
    """How long the server's and the fakes' main threads sat runnable but not running
    (``/proc/PID/schedstat``), sampled beside a level: the share of the machine's other
    work (other agents' jobs on the same core) in every hop.

    The server is this process's ``callbridge.cli serve`` child (``run_level`` starts
    it); the figures are per second of the level, from the first sample to the last.
    """

    def __init__(self, fakes_pid: int) -> None:
        self._fakes = fakes_pid
        self._stop = threading.Event()
        self._first: dict[str, tuple[float, int, int]] = {}
        self._last: dict[str, tuple[float, int, int]] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RunQueueWait:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        server: int | None = None
        while not self._stop.wait(0.5):
            server = server if server is not None and _alive(server) else _server_child()
            for name, pid in (("server", server), ("fakes", self._fakes)):
                stat = _schedstat(pid) if pid is not None else None
                if stat is not None:
                    self._first.setdefault(name, stat)
                    self._last[name] = stat

    def figures(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name in ("server", "fakes"):
            first, last = self._first.get(name), self._last.get(name)
            cpu = wait = None
            if first is not None and last is not None and last[0] > first[0]:
                dt_ns = (last[0] - first[0]) * 1e9
                cpu = round(100 * (last[1] - first[1]) / dt_ns, 1)
                wait = round(100 * (last[2] - first[2]) / dt_ns, 1)
            out[f"{name}_cpu_pct_level"], out[f"{name}_runq_wait_pct"] = cpu, wait
        return out


def _schedstat(pid: int) -> tuple[float, int, int] | None:
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
            cpu_ns, wait_ns, _ = f.read().split()
    except (OSError, ValueError):
        return None
    return time.monotonic(), int(cpu_ns), int(wait_ns)


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}/schedstat")


def _server_child() -> int | None:
    """The server ``run_level`` started: our child running ``callbridge.cli serve``."""
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            if ppid != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, IndexError):
            continue
        if b"callbridge.cli" in argv and b"serve" in argv:
            return int(entry)
    return None


def answer_hops(data_dir: str) -> list[dict[str, float]]:
    """Every answer's ``hop_*`` marks from the server's SQLite call record."""
    path = Path(data_dir) / "callbridge.db"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT latency_ms FROM turns WHERE role = 'assistant' AND kind = 'answer'"
        ).fetchall()
    hops = []
    for (raw,) in rows:
        latency = json.loads(raw) if isinstance(raw, str) else raw
        marks = {k[4:]: float(v) for k, v in (latency or {}).items() if k.startswith("hop_")}
        if "first_frame" in marks:
            hops.append(marks)
    return hops


def summarise(turns: list[dict[str, float]]) -> dict[str, Any]:
    """p50/p95 of each mark (from the speech end) and of each step between two marks."""

    def pq(values: list[float]) -> dict[str, float | None]:
        p50, p95 = percentile(values, 50), percentile(values, 95)
        return {
            "p50": None if p50 is None else round(p50, 1),
            "p95": None if p95 is None else round(p95, 1),
            "n": len(values),
        }

    marks = {hop: pq([t[hop] for t in turns if hop in t]) for hop in HOPS}
    steps = {}
    for name, start, end in STEPS:
        values = [
            t[end] - (0.0 if start is None else t[start])
            for t in turns
            if end in t and (start is None or start in t)
        ]
        steps[name] = pq(values)
    return {"marks": marks, "steps": steps}


def level(n: int, fakes_pid: int, duration: float, spread: float) -> dict[str, Any]:
    args = argparse.Namespace(
        duration=duration,
        spread=spread,
        assistant=ROOT / "examples/assistant-seed.yaml",
        profile=None,
        client_pid=[fakes_pid],
    )
    with RunQueueWait(fakes_pid) as waits:
        result = run_level(n, args)
    row = result.row()
    turns = answer_hops(result.data_dir)
    return {
        "calls": n,
        "server_cpu_pct": row["server_cpu_pct"],
        "client_cpu_pct": row["client_cpu_pct"],
        "client_turn_p50_ms": row["turn_p50_ms"],
        "client_turn_p95_ms": row["turn_p95_ms"],
        "failed": row["failed"],
        "answers": len(turns),
        **waits.figures(),
        **summarise(turns),
    }


def _cell(stat: dict[str, Any]) -> str:
    if stat["p50"] is None:
        return "-"
    return f"{stat['p50']:.0f} / {stat['p95']:.0f}"


def table(levels: list[dict[str, Any]]) -> str:
    head = "| hop (ms, p50 / p95) | " + " | ".join(f"N={lv['calls']}" for lv in levels) + " |"
    lines = [head, "|---|" + "---:|" * len(levels)]

    def row(title: str, cells: list[str]) -> None:
        lines.append(f"| {title} | " + " | ".join(cells) + " |")

    row("server CPU %", [str(lv["server_cpu_pct"]) for lv in levels])
    row("client core CPU %", [str(lv["client_cpu_pct"]) for lv in levels])
    for key, title in (
        ("server_runq_wait_pct", "server waited for its core, % of the level"),
        ("fakes_cpu_pct_level", "vendor fakes CPU %"),
        ("fakes_runq_wait_pct", "vendor fakes waited for their core, %"),
    ):
        row(title, [str(lv.get(key)) for lv in levels])
    row("answers measured", [str(lv["answers"]) for lv in levels])
    row(
        "**client turn** (last word → audible)",
        [f"{lv['client_turn_p50_ms']} / {lv['client_turn_p95_ms']}" for lv in levels],
    )
    for hop in HOPS:
        row(f"at {hop}", [_cell(lv["marks"][hop]) for lv in levels])
    for name, _, _ in STEPS:
        row(f"step: {name}", [_cell(lv["steps"][name]) for lv in levels])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/turn_hops.py", description=__doc__)
    parser.add_argument("counts", nargs="*", type=int, default=[1, 40, 80])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per call")
    parser.add_argument("--spread", type=float, default=4.0, help="arrival spread at N=200 (s)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the whole bench (server, callers, fakes inherit it) at this nice value, "
        "and its session's autogroup too (start it under setsid, so that group is the "
        "bench's alone): -10 keeps other jobs on a shared machine off the server's core",
    )
    args = parser.parse_args(argv)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
            group.write(str(args.nice))  # with autogroup on, nice acts only inside a group
    with contextlib.suppress(OSError):  # the parent must not take the server's core
        os.sched_setaffinity(0, {CLIENT_CORE})
    levels = []
    with seed_fakes() as pid:
        for n in args.counts:
            levels.append(level(n, pid, args.duration, args.spread))
            print(f"N={n} done", file=sys.stderr, flush=True)
    print(json.dumps(levels, indent=2) if args.json else table(levels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
