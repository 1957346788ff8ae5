"""``callbridge doctor``: is this machine ready to take calls? One line per check.

Each check does the real thing where it can — loads the VAD model, makes the TTS speak,
connects to the database — because a setting that parses is not a setting that works.
A failed check says how to fix it. Exit code 1 when any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from callbridge.errors import CallbridgeError, ConfigError
from callbridge.settings import PLACEHOLDER_TOKEN, Settings, load_settings

__all__ = ["Check", "add_command", "run_checks"]

EXIT_FAILED = 1
TTS_TIMEOUT_S = 30.0
_ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")

Verdict = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    fix: str = ""


def add_command(subparsers: Any) -> None:
    doctor = subparsers.add_parser(
        "doctor", help="check settings, keys, PUBLIC_URL, database, VAD model and TTS voice"
    )
    doctor.add_argument("--assistant", metavar="FILE", help="default: CALLBRIDGE_ASSISTANT")
    doctor.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    console = Console()
    failed = False
    for check in run_checks(Path(args.assistant) if args.assistant else None):
        style = {"ok": "green", "warn": "yellow", "fail": "red"}[check.verdict]
        console.print(f"[{style}]{check.verdict:<4}[/] {check.name:<12} {check.detail}")
        if check.fix and check.verdict != "ok":
            console.print(f"     {'':<12} [dim]fix:[/] {check.fix}")
        failed = failed or check.verdict == "fail"
    return EXIT_FAILED if failed else 0


def run_checks(assistant_path: Path | None = None) -> Iterator[Check]:
    try:
        settings = load_settings()
    except ConfigError as exc:
        yield Check("settings", "fail", str(exc), "edit .env (see .env.example)")
        return
    yield Check("settings", "ok", "loaded from the environment and .env")
    yield from _twilio(settings)
    yield _public_url(settings)
    yield _api_token(settings)
    yield asyncio.run(_database(settings))
    yield from _assistant(settings, assistant_path or settings.assistant_path)


def _twilio(settings: Settings) -> Iterator[Check]:
    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    if not _ACCOUNT_SID.match(settings.account_sid):
        yield Check(
            "twilio",
            "fail",
            "TWILIO_ACCOUNT_SID is missing or not AC + 32 hex digits",
            "copy it from the Twilio console (Account info)",
        )
    elif not token or token == PLACEHOLDER_TOKEN:
        yield Check(
            "twilio",
            "fail",
            "TWILIO_AUTH_TOKEN is not set",
            "copy it from the Twilio console; signatures cannot be checked without it",
        )
    else:
        yield Check("twilio", "ok", f"account {settings.account_sid[:6]}…, auth token set")
    if settings.from_number:
        yield Check("caller id", "ok", f"outbound calls from {settings.from_number}")
    else:
        yield Check(
            "caller id",
            "warn",
            "TWILIO_PHONE_NUMBER is not set: `callbridge call` needs --from",
            "set TWILIO_PHONE_NUMBER to your Twilio number (E.164)",
        )


def _public_url(settings: Settings) -> Check:
    url = settings.public_url
    if not url:
        return Check(
            "public url",
            "fail",
            "PUBLIC_URL is not set",
            "set PUBLIC_URL=https://your-host (the origin Twilio reaches, e.g. a tunnel)",
        )
    if not url.startswith("https://"):
        return Check(
            "public url",
            "fail",
            f"{url} is not https: Twilio's media stream needs wss://",
            "serve behind TLS (a reverse proxy or tunnel) and set PUBLIC_URL=https://…",
        )
    return Check(
        "public url", "ok", f"webhook {url}/voice, stream {url.replace('https', 'wss', 1)}/media"
    )


def _api_token(settings: Settings) -> Check:
    if settings.api_token is None:
        return Check(
            "api token",
            "warn",
            "CALLBRIDGE_API_TOKEN is not set: /api is off",
            "set it to a long random string, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
    return Check("api token", "ok", "set; /api needs 'Authorization: Bearer <token>'")


async def _database(settings: Settings) -> Check:
    from sqlalchemy.exc import SQLAlchemyError

    from callbridge.store.database import Database

    try:
        database = Database.from_settings(settings)
    except (ConfigError, OSError) as exc:
        return Check("database", "fail", str(exc), "fix DATABASE_URL")
    try:
        state = await database.schema_state()
    except (SQLAlchemyError, OSError) as exc:
        return Check(
            "database",
            "fail",
            f"cannot connect to {database.safe_url}: {exc.__class__.__name__}: {exc}"[:300],
            "start the database server or fix DATABASE_URL",
        )
    finally:
        await database.dispose()
    if not state.up_to_date:
        return Check(
            "database",
            "fail",
            f"{database.safe_url} is at revision {state.current or 'none'}, code needs "
            f"{state.head}",
            "run `callbridge serve` once: it migrates the schema at start-up",
        )
    return Check("database", "ok", f"{database.safe_url}, schema at {state.head}")


def _assistant(settings: Settings, path: Path) -> Iterator[Check]:
    from callbridge.assistant import build_assistant, load_assistant
    from callbridge.voice_agent import agent_env, build_runner

    try:
        config = load_assistant(path)
    except ConfigError as exc:
        yield Check("assistant", "fail", str(exc), f"fix {path} or CALLBRIDGE_ASSISTANT")
        return
    yield Check("assistant", "ok", f"{path}: {config.name}")
    if config.recording_enabled:
        yield _writable(settings.recordings_path)
    env = agent_env()
    if getattr(config, "engine", "pipeline") != "pipeline":
        yield _try("providers", lambda: build_runner(path, env), "bridge keys present")
        return
    built: dict[str, Any] = {}

    def build() -> None:
        built["assistant"] = build_assistant(config, env)

    check = _try(
        "providers",
        build,
        f"vad {config.vad.get('provider')}, stt {config.transcriber.get('provider')}, "
        f"llm {config.model.get('provider')}, tts {config.voice.get('provider')}",
    )
    yield check
    if check.verdict != "ok":
        return
    assistant = built["assistant"]
    yield _try("vad model", lambda: _vad_runs(assistant.vad), "loaded, scores a frame")
    yield asyncio.run(_tts_speaks(assistant.tts))


def _try(name: str, action: Callable[[], object], ok: str) -> Check:
    try:
        action()
    except ConfigError as exc:
        return Check(name, "fail", str(exc), "set the variable it names in .env")
    except (CallbridgeError, OSError, RuntimeError, ValueError) as exc:
        return Check(name, "fail", f"{exc.__class__.__name__}: {exc}", "see the error above")
    return Check(name, "ok", ok)


def _vad_runs(vad: Any) -> None:
    stream = vad.new_stream()
    probability = float(stream.speech_probability(bytes(320)))
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"expected a probability in [0, 1] for silence, got {probability}")


async def _tts_speaks(tts: Any) -> Check:
    audio = 0
    try:
        async with asyncio.timeout(TTS_TIMEOUT_S):
            async for chunk in tts.synthesize("This is callbridge, checking the voice."):
                audio += len(chunk)
    except TimeoutError:
        return Check("tts voice", "fail", f"no audio within {TTS_TIMEOUT_S:g} s", "check the TTS")
    except (CallbridgeError, OSError) as exc:
        return Check("tts voice", "fail", str(exc), "check the voice block's key and voiceId")
    if audio < 800:
        return Check("tts voice", "fail", f"only {audio} bytes of audio", "check the voice block")
    return Check("tts voice", "ok", f"{getattr(tts, 'name', 'tts')}: {audio / 8000:.1f} s of audio")


def _writable(directory: Path) -> Check:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return Check(
            "recordings",
            "fail",
            f"{directory} is not writable: {exc.strerror}",
            "set CALLBRIDGE_RECORDINGS_DIR to a writable folder",
        )
    return Check("recordings", "ok", f"{directory} is writable")
