"""``callbridge simulate``, ``callbridge test`` and ``callbridge bench``.

``add_commands(subparsers)`` registers them on the main parser; each handler returns the
process exit code (``test``: 1 when any scenario failed, so CI can gate on it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from callbridge.errors import ConfigError
from callbridge.settings import Settings
from callbridge.simulator.caller import LiveCall
from callbridge.simulator.dialer import CallOptions
from callbridge.simulator.display import live_view
from callbridge.simulator.records import api_bot_turns
from callbridge.simulator.report import CallReport, render
from callbridge.simulator.runner import prepare_voices, run_scenario
from callbridge.simulator.scenario import Scenario, load_scenario, parse_scenario
from callbridge.simulator.wire import new_sid

__all__ = ["add_commands", "quick_scenario"]

EXIT_FAILED = 1


def add_commands(subparsers: Any) -> None:
    """Register ``simulate``, ``test`` and ``bench`` on the ``callbridge`` parser."""
    sim = subparsers.add_parser(
        "simulate", help="call the server like Twilio does, as a scripted caller"
    )
    _call_arguments(sim)
    what = sim.add_mutually_exclusive_group()
    what.add_argument("--say", metavar="TEXT", help="say this (espeak-ng voice) after the greeting")
    what.add_argument("--audio", metavar="WAV", help="play this WAV (any rate) after the greeting")
    what.add_argument("--scenario", metavar="YAML", help="run a scenario file")
    sim.add_argument("--voice", default="en-us", help="espeak-ng voice for --say")
    sim.add_argument("--record", metavar="WAV", help="write both legs (caller left, bot right)")
    sim.set_defaults(handler=_simulate)

    test = subparsers.add_parser(
        "test", help="run scenario files (a folder or files); exit 1 if any fails"
    )
    _call_arguments(test)
    test.add_argument("paths", nargs="+", metavar="PATH", help="scenario files or folders")
    test.set_defaults(handler=_test)

    bench = subparsers.add_parser(
        "bench", help="load benchmark: N concurrent simulated calls against a one-core server"
    )
    bench.add_argument("counts", nargs="*", type=int, metavar="N", help="default: 10 50 100 200")
    bench.add_argument("--duration", type=float, default=20.0, help="seconds per call")
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.set_defaults(handler=_bench)


def quick_scenario(say: str | None, audio: str | None, voice: str) -> Scenario:
    """``--say``/``--audio``: let the greeting finish, speak, hear the reply, hang up."""
    steps: list[Any] = [{"wait_for_silence": {"ms": 1000, "timeout_ms": 30_000}}]
    if say is not None:
        steps.append({"say": {"text": say, "voice": voice}})
    elif audio is not None:
        steps.append({"play": str(Path(audio).resolve())})
    if say is not None or audio is not None:
        steps.append({"wait_for_bot_speech": 10_000})
    steps += [{"wait_for_silence": {"ms": 1500, "timeout_ms": 60_000}}, "hangup"]
    return parse_scenario(json.dumps({"name": "simulate", "steps": steps}), source="<simulate>")


# ------------------------------------------------------------ handlers


def _call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="server base URL (default: http://127.0.0.1:$CALLBRIDGE_PORT)"
    )
    parser.add_argument(
        "--public-url",
        help="the origin Twilio would call (signatures cover it; default: $PUBLIC_URL)",
    )
    parser.add_argument("--from", dest="from_number", help="caller number")
    parser.add_argument("--to", dest="to_number", help="called number")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--api-token",
        help="bearer token of the call-records API, for expect_bot_says "
        "(default: $CALLBRIDGE_API_TOKEN)",
    )


def _options(args: argparse.Namespace, scenario: Scenario) -> CallOptions:
    none: dict[str, Any] = {}
    settings = Settings(**none)  # env and .env only; no stream secret is created here
    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    if not token and not settings.insecure_skip_signature:
        raise ConfigError("TWILIO_AUTH_TOKEN is not set: the simulator signs requests with it")
    url = args.url or f"http://127.0.0.1:{settings.port}"
    public = args.public_url or settings.public_url
    return CallOptions(
        base_url=url,
        auth_token=token or "unsigned",
        from_number=args.from_number or scenario.from_number,
        to_number=args.to_number or scenario.to_number,
        account_sid=settings.account_sid or new_sid("AC"),
        public_url=public if public and public.rstrip("/") != url.rstrip("/") else None,
    )


def _simulate(args: argparse.Namespace) -> int:
    if args.scenario:
        scenario = load_scenario(args.scenario)
        base = Path(args.scenario).parent
    else:
        scenario = quick_scenario(args.say, args.audio, args.voice)
        base = Path.cwd()
    report = asyncio.run(_run_one(args, scenario, base, record=args.record))
    _print([report], args.json, single=True)
    return 0 if report.ok else EXIT_FAILED


def _test(args: argparse.Namespace) -> int:
    files: list[Path] = []
    for raw in args.paths:
        path = Path(raw)
        files += sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
    if not files:
        raise ConfigError(f"no scenario files in {' '.join(args.paths)}")
    scenarios = [load_scenario(f) for f in files]  # every file checked before any call
    reports = [
        asyncio.run(_run_one(args, s, f.parent)) for s, f in zip(scenarios, files, strict=True)
    ]
    _print(reports, args.json, single=False)
    if not args.json:
        passed = sum(r.ok for r in reports)
        Console().print(f"{passed} passed, {len(reports) - passed} failed")
    return 0 if all(r.ok for r in reports) else EXIT_FAILED


def _bench(args: argparse.Namespace) -> int:
    from callbridge.simulator import load

    argv = [str(n) for n in args.counts] + ["--duration", str(args.duration)]
    return load.main([*argv, "--json"] if args.json else argv)


async def _run_one(
    args: argparse.Namespace, scenario: Scenario, base: Path, record: str | None = None
) -> CallReport:
    voices = await asyncio.to_thread(prepare_voices, scenario, base)
    options = _options(args, scenario)
    none: dict[str, Any] = {}
    token = args.api_token or Settings(**none).api_token
    said = None
    if token:
        secret = token if isinstance(token, str) else token.get_secret_value()
        said = api_bot_turns(options.base_url, secret)
    if args.json or not sys.stdout.isatty():
        return await run_scenario(scenario, options, voices, record_path=record, bot_turns=said)
    async with live_view(Console(), scenario.name) as slot:

        def follow(call: LiveCall) -> None:
            slot.append(call)

        return await run_scenario(
            scenario, options, voices, record_path=record, on_call=follow, bot_turns=said
        )


def _print(reports: Sequence[CallReport], as_json: bool, *, single: bool) -> None:
    if as_json:
        data = [r.as_dict() for r in reports]
        print(json.dumps(data[0] if single else data, indent=2))
        return
    console = Console()
    for report in reports:
        render(report, console)
