"""Soak under random vendor faults (issue 10): calls through the seed stack (the real
Deepgram, OpenAI and ElevenLabs clients against their wire-level fakes, each behind a
chaos proxy), placed evenly over a duration, while faults are injected at a set rate:
each new vendor connection fails with probability RATE (refused, 429/500/503, closed
with the vendor's close code, garbage frames, stalled, cut), and live connections are
struck mid-call at random. Prints how the calls ended:

- normal: the caller finished its script and hung up; the server never closed with 1011;
- apology: the server apologised (fallback voice) and hung up through Twilio REST;
- lost: anything else (a 1011, a socket dropped without a word, a call that hung).

    .venv/bin/python bench/soak.py [CALLS] [DURATION_S] [RATE] [SEED]
    make soak                        # 50 calls over 300 s, rate 0.15

Only 127.0.0.1 is used. The retry policy is the real one (1, 2, 4 s; hold after 3 s);
vendor timeouts are 1 s so stalls resolve within a call.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the vendor fakes and the chaos layer

from fakes.script import Reply  # noqa: E402
from faults.chaos import (  # noqa: E402
    Cut,
    HttpError,
    Pass,
    Plan,
    Refuse,
    Stall,
    WsClose,
    WsGarbage,
)
from faults.stack import Outcome, Stack, seed_stack  # noqa: E402

QUESTIONS = (
    "I need help with my bill please.",
    "What was the amount again?",
    "And when is the next one due?",
)
SCRIPT = """
name: soak
timeout_s: 90
steps:
  - expect_bot_speech: 5000
  - wait_for_silence: {ms: 700, timeout_ms: 20000}
""" + "".join(f"""  - say: "{q}"
  - wait_for_bot_speech: 12000
  - wait_for_silence: {{ms: 900, timeout_ms: 25000}}
""" for q in QUESTIONS) + "  - hangup\n"
ANSWER = Reply(text=("Sure, I can check that for you. ", "It was forty two dollars, paid on "
                     "the third of the month."))


def _plans(kind: str) -> list[Plan]:
    busy = HttpError(503, '{"error": {"message": "overloaded", "type": "server_error"}}')
    limited = HttpError(429, '{"error": {"message": "Rate limit", "type": "requests"}}')
    if kind == "llm":
        return [Refuse(), busy, limited, HttpError(500), Stall(200), Cut(400)]
    code = 1011
    garbage = (WsGarbage(3) if kind == "stt"
               else WsGarbage(3, '{"audio": "%%not-base64%%", "isFinal": null}'))
    return [Refuse(), busy, limited, WsClose(code, "NET-0001", after_down_frames=2),
            garbage, Stall(800), Cut(1500)]


def _chooser(kind: str, rate: float, rng: random.Random) -> Any:
    plans = _plans(kind)

    def choose(_: int) -> Plan:
        return rng.choice(plans) if rng.random() < rate else Pass()

    return choose


def _verdict(outcome: Outcome | None) -> str:
    if outcome is None:
        return "lost"
    report = outcome.report
    if report.close_code == 1011 or outcome.unhandled:
        return "lost"
    if report.hangup_by == "caller" and not report.failures:
        return "normal"
    if (report.hangup_by == "server" and outcome.rest_status == "completed"
            and outcome.outcome == "apology" and outcome.kinds_heard()[-1:] == ["speech"]):
        return "apology"
    return "lost"


async def _strike_now_and_then(stack: Stack, rng: random.Random, per_minute: float) -> None:
    """Mid-call faults on live connections, at random times."""
    proxies = {"stt": stack.stt, "llm": stack.llm, "tts": stack.tts}
    while True:
        await asyncio.sleep(rng.expovariate(per_minute / 60))
        kind = rng.choice(sorted(proxies))
        plan = rng.choice([WsClose(1011, "NET-0001"), Stall(), Cut()]) if kind != "llm" \
            else rng.choice([Stall(), Cut()])
        await proxies[kind].strike(plan)


async def _one(stack: Stack, start_at: float, results: list[tuple[str, Outcome | None]]) -> None:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    try:
        outcome: Outcome | None = await stack.call(SCRIPT)
    except Exception as exc:  # a harness failure is a lost call, reported below
        print(f"  call failed in the harness: {exc!r}", file=sys.stderr)
        outcome = None
    verdict = _verdict(outcome)
    results.append((verdict, outcome))
    if verdict == "lost" and outcome is not None:
        print(f"  lost {outcome.report.call_sid}: close={outcome.report.close_code} "
              f"by={outcome.report.hangup_by} outcome={outcome.outcome} "
              f"failures={outcome.report.failures} unhandled={len(outcome.unhandled)}",
              file=sys.stderr)


async def _main(calls: int, duration_s: float, rate: float, seed: int) -> int:
    rng = random.Random(seed)
    chaos = {kind: {"choose": _chooser(kind, rate, rng)} for kind in ("stt", "llm", "tts")}
    results: list[tuple[str, Outcome | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with seed_stack(Path(tmp), transcripts=QUESTIONS, default_reply=ANSWER,
                              faults={}, chaos=chaos) as stack:
            await stack.prepare(SCRIPT)  # espeak blocks: synthesise the caller once, first
            began = time.monotonic()
            # Strikes at a rate that matches RATE's share of calls over the whole run.
            striker = asyncio.create_task(
                _strike_now_and_then(stack, rng, per_minute=max(0.1, rate * 8)))
            spacing = duration_s / max(1, calls)
            await asyncio.gather(*(
                _one(stack, began + i * spacing + rng.uniform(0, spacing / 2), results)
                for i in range(calls)
            ))
            striker.cancel()
            elapsed = time.monotonic() - began
            faults = sum(p.connections for p in (stack.stt, stack.llm, stack.tts))
            injected = sum(sum(not isinstance(a, Pass) for a in p.applied)
                           for p in (stack.stt, stack.llm, stack.tts))
    verdicts = Counter(v for v, _ in results)
    repaired = sum(1 for v, o in results if v == "normal" and o is not None and (
        o.events("stt_lost") or o.events("provider_retry") or o.events("hold")))
    print(f"soak: {calls} calls over {elapsed:.0f} s, fault rate {rate:g} per connection "
          f"(seed {seed}); {injected} of {faults} vendor connections faulted")
    print(f"| {'ended':<28} | {'calls':>5} |")
    print(f"|{'-' * 30}|{'-' * 7}|")
    for label, key in (("normally", "normal"), ("  of which repaired a fault", None),
                       ("with an apology", "apology"), ("lost", "lost")):
        count = repaired if key is None else verdicts.get(key, 0)
        print(f"| {label:<28} | {count:>5} |")
    return 1 if verdicts.get("lost", 0) else 0


def main() -> None:
    args = sys.argv[1:]
    calls = int(args[0]) if len(args) > 0 else 50
    duration_s = float(args[1]) if len(args) > 1 else 300.0
    rate = float(args[2]) if len(args) > 2 else 0.15
    seed = int(args[3]) if len(args) > 3 else 10
    # The server reads its limit from the environment (default 30): it must fit the run,
    # or the soak would count refusals at capacity as lost calls.
    os.environ["CALLBRIDGE_MAX_CALLS"] = str(calls)
    sys.exit(asyncio.run(_main(calls, duration_s, rate, seed)))


if __name__ == "__main__":
    main()
