"""The ``callbridge`` command. Subcommands share one parser built by ``build_parser``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from callbridge.cli_calls import add_commands as add_call_commands
from callbridge.errors import ConfigError
from callbridge.settings import Settings, load_settings
from callbridge.simulator.command import add_commands as add_simulator_commands
from callbridge.simulator.replay_command import add_command as add_replay_command

__all__ = ["build_parser", "main"]

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callbridge", description="Turn a Twilio phone number into a voice AI agent."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the server Twilio calls (webhooks + media stream)")
    serve.add_argument("--host", help="listen address (default: CALLBRIDGE_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="listen port (default: CALLBRIDGE_PORT or 8080)")
    serve.add_argument(
        "--assistant", metavar="FILE", help="assistant file (default: CALLBRIDGE_ASSISTANT)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes sharing the port (default: CALLBRIDGE_WORKERS, else one per "
        "core with PostgreSQL; SQLite is always one instance)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)
    add_call_commands(sub)
    add_simulator_commands(sub)
    add_replay_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        # One line a person can act on; a traceback here would bury the variable's name.
        print(f"callbridge: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return code


def _serve(args: argparse.Namespace) -> int:
    from callbridge.server.app import serving_app
    from callbridge.server.serve import serve
    from callbridge.server.workers import default_workers
    from callbridge.telemetry.logging import configure_logging

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(**overrides)
    configure_logging(settings.log_level, settings.log_format, secrets=settings.secret_values())
    workers = args.workers or settings.workers
    if workers is None:
        workers = default_workers() if settings.shared_store else 1
    if workers > 1 and not settings.shared_store:
        raise ConfigError(
            f"--workers {workers}: the SQLite store is one instance's file; set DATABASE_URL "
            "to PostgreSQL to run several instances (or use --workers 1)"
        )
    if workers > 1:
        return _supervise(args, settings, workers)
    assistant = Path(args.assistant) if args.assistant else settings.assistant_path
    app = serving_app(settings, assistant)
    if not args.reuse_port:
        print(_banner(settings), flush=True)
    serve(app, settings, reuse_port=args.reuse_port)
    return 0


def _supervise(args: argparse.Namespace, settings: Settings, workers: int) -> int:
    import os

    from callbridge.server.workers import reserve_port, supervise, worker_command

    port, held = reserve_port(settings.host, settings.port)
    with held:
        passed = ["--host", settings.host, "--port", str(port)]
        if args.assistant:
            passed += ["--assistant", args.assistant]
        shown = settings.model_copy(update={"port": port})
        print(f"{_banner(shown)}\n  {workers} worker processes share the port", flush=True)
        return supervise(workers, worker_command(passed), dict(os.environ))


def _banner(settings: Settings) -> str:
    if settings.public_url:
        webhook = f"{settings.public_url}/voice"
        note = ""
    else:
        host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
        webhook = (
            f"https://<your public host>/voice  (locally: http://{host}:{settings.port}/voice)"
        )
        note = "\n  PUBLIC_URL is not set: set it to the https origin Twilio calls."
    return (
        f"callbridge listening on {settings.host}:{settings.port}\n"
        f"  Twilio console → Phone Numbers → your number → Voice → 'A call comes in':\n"
        f"  Webhook (HTTP POST): {webhook}{note}"
    )


if __name__ == "__main__":
    sys.exit(main())
