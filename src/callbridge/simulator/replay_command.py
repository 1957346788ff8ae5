"""``callbridge replay CALL_SID --assistant FILE``: the CLI face of ``simulator/replay.py``.

The stored call is read from the configured database (``DATABASE_URL`` or the data
dir's SQLite file), as ``callbridge calls`` reads it. Exit status: 0 when the replay
ran, 1 with ``--check`` when it differs from the original, 2 when it cannot run (no such
call, no recording, a bad assistant file), with one line saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from callbridge.errors import ConfigError
from callbridge.simulator.replay_report import ReplayReport, render_replay
from callbridge.simulator.replay_source import ReplayError

__all__ = ["add_command"]

EXIT_DIFFERENT = 1
EXIT_CANNOT = 2


def add_command(subparsers: Any) -> None:
    replay = subparsers.add_parser(
        "replay",
        help="re-run a recorded call's caller against another assistant; compare the two",
    )
    replay.add_argument("sid", metavar="CALL_SID", help="the stored call (CA…)")
    replay.add_argument(
        "--assistant", metavar="FILE", help="the assistant to replay against (served here)"
    )
    replay.add_argument(
        "--url", help="replay against this running server instead (its own assistant)"
    )
    replay.add_argument(
        "--api-token",
        help="with --url: the server's CALLBRIDGE_API_TOKEN, to read the replay's turns",
    )
    replay.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="N",
        help="shorten the dead air (neither side audible) N times; speech stays real time",
    )
    replay.add_argument(
        "--tolerance-ms",
        type=float,
        default=150.0,
        metavar="MS",
        help="latency difference per caller turn still counted the same (default 150)",
    )
    replay.add_argument(
        "--gap-ms",
        type=int,
        default=600,
        metavar="MS",
        help="a caller pause this long splits two caller turns (default 600)",
    )
    replay.add_argument("--json", action="store_true", help="machine-readable output (CI)")
    replay.add_argument(
        "--check", action="store_true", help="exit 1 when the replay differs from the original"
    )
    replay.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    from callbridge.assistant import load_assistant
    from callbridge.settings import Settings
    from callbridge.simulator.replay import RemoteServer, ReplaySettings, replay_call
    from callbridge.simulator.replay_source import load_stored_call
    from callbridge.store.database import Database

    if args.speed < 1:
        raise ConfigError(f"--speed: expected 1 or more, got {args.speed:g}")
    if args.url and args.assistant:
        raise ConfigError("--url replays against that server's own assistant: drop --assistant")
    if not args.url and not args.assistant:
        raise ConfigError("give --assistant FILE (served here) or --url of a running server")
    assistant = Path(args.assistant) if args.assistant else None
    if assistant is not None:
        load_assistant(assistant)  # a bad file is reported before anything starts
    none: dict[str, Any] = {}
    settings = Settings(**none)  # env and .env: where the record is; no Twilio token needed
    remote = None
    if args.url:
        token = settings.auth_token.get_secret_value() if settings.auth_token else ""
        if not token and not settings.insecure_skip_signature:
            raise ConfigError("TWILIO_AUTH_TOKEN is not set: the simulator signs requests with it")
        api = args.api_token or (
            settings.api_token.get_secret_value() if settings.api_token else None
        )
        remote = RemoteServer(
            args.url, token or "unsigned", api_token=api, public_url=settings.public_url,
            account_sid=settings.account_sid or None,
        )
    options = ReplaySettings(speed=args.speed, gap_ms=args.gap_ms, tolerance_ms=args.tolerance_ms)

    async def run() -> ReplayReport:
        database = Database.from_settings(settings)
        try:
            stored = await load_stored_call(database, args.sid)
        finally:
            await database.dispose()
        return await replay_call(stored, assistant, settings=options, remote=remote)

    quiet = logging.StreamHandler(sys.stderr)
    quiet.setLevel(logging.ERROR)  # the server's start-up warnings are not the report
    logger = logging.getLogger("callbridge")
    logger.addHandler(quiet)
    try:
        report = asyncio.run(run())
    except ReplayError as exc:
        print(f"callbridge replay: {exc}", file=sys.stderr)
        return EXIT_CANNOT
    finally:
        logger.removeHandler(quiet)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render_replay(report, Console())
    return EXIT_DIFFERENT if args.check and not report.same else 0
