"""``callbridge calls``, ``calls show SID``, ``call +1…`` and ``doctor``.

The commands read the database directly (the same ``store`` module the server writes
with) rather than calling ``/api``: the morning after, the record must be readable
whether or not the server is up (or crashed), and without handing the API token to a
shell. ``call`` goes to Twilio's REST API directly for the same reason and writes the
call's first row, as ``POST /api/calls`` does.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from callbridge.errors import ConfigError
from callbridge.settings import Settings, load_settings
from callbridge.store.database import Database
from callbridge.store.models import Turn, utc
from callbridge.store.ops import CallSeen, EventHappened, apply
from callbridge.store.repository import CallDetail, CallFilter, Page, get_call, list_calls

__all__ = ["add_commands", "latency_bar"]

EXIT_FAILED = 1
BAR_MS_PER_CELL = 25
BAR_MAX_CELLS = 48


def add_commands(subparsers: Any) -> None:
    """Register ``calls``, ``call`` and ``doctor`` on the ``callbridge`` parser."""
    calls = subparsers.add_parser("calls", help="recent calls from the call record")
    calls.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    calls.add_argument("--status", help="only calls with this status (e.g. completed)")
    calls.add_argument("--from", dest="from_number", metavar="NUMBER", help="only from NUMBER")
    calls.add_argument("--to", dest="to_number", metavar="NUMBER", help="only to NUMBER")
    calls.add_argument("--since", type=_iso_time, help="only calls since (ISO time, UTC)")
    calls.set_defaults(handler=_calls)
    calls_sub = calls.add_subparsers(dest="calls_command", metavar="SUBCOMMAND")
    show = calls_sub.add_parser("show", help="one call's transcript with per-turn latency")
    show.add_argument("sid", metavar="SID", help="the CallSid (CA…)")
    show.set_defaults(handler=_show)

    call = subparsers.add_parser("call", help="place an outbound call that the agent answers")
    call.add_argument("to", metavar="NUMBER", help="E.164 number to call, e.g. +15551234567")
    call.add_argument("--from", dest="from_number", help="caller ID (default TWILIO_PHONE_NUMBER)")
    call.set_defaults(handler=_call)

    from callbridge.doctor import add_command

    add_command(subparsers)


# ------------------------------------------------------------------ calls


def _calls(args: argparse.Namespace) -> int:
    settings = load_settings()
    where = CallFilter(
        status=args.status,
        from_number=args.from_number,
        to_number=args.to_number,
        since=args.since,
    )
    page = asyncio.run(_read(settings, lambda db: list_calls(db, where, limit=args.limit)))
    console = Console()
    if page is None:
        return EXIT_FAILED
    assert isinstance(page, Page)
    if not page.rows:
        console.print("No calls recorded yet.")
        return 0
    table = Table(title=f"{len(page.rows)} of {page.total} calls, newest first")
    for column in ("started (UTC)", "sid", "from", "to", "dir", "status", "dur", "turns"):
        table.add_column(column, no_wrap=column in ("sid", "started (UTC)"))
    table.add_column("outcome")
    for row in page.rows:
        call = row.call
        started, ended = utc(call.started_at), utc(call.ended_at)
        duration = f"{(ended - started).total_seconds():.0f}s" if started and ended else "live?"
        table.add_row(
            f"{started:%Y-%m-%d %H:%M:%S}" if started else "",
            call.sid,
            call.from_number,
            call.to_number,
            call.direction.removeprefix("outbound-"),
            call.status,
            duration,
            str(row.turns),
            call.outcome or "",
        )
    console.print(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    settings = load_settings()
    detail = asyncio.run(_read(settings, lambda db: get_call(db, args.sid)))
    console = Console()
    if detail is None:
        console.print(f"No call {args.sid} in the record ({_where(settings)}).")
        return EXIT_FAILED
    assert isinstance(detail, CallDetail)
    call = detail.call
    started = utc(call.started_at)
    console.print(
        f"[bold]{call.sid}[/]  {call.from_number} → {call.to_number}  {call.direction}  "
        f"{call.status}  {call.outcome or ''}  started {started:%Y-%m-%d %H:%M:%S} UTC"
    )
    for turn in detail.turns:
        console.print(_turn_line(turn, started))
        bar = latency_bar(turn.latency_ms or {})
        if bar is not None:
            console.print(Text("      ").append(bar))
    if detail.events:
        console.print("[bold]events[/]")
        for event in detail.events:
            at = utc(event.at)
            offset = (at - started).total_seconds() if at and started else 0.0
            data = " ".join(f"{k}={v}" for k, v in (event.data or {}).items())
            console.print(f"  {offset:7.2f}s  {event.kind}  [dim]{data}[/]")
    if detail.recording is not None:
        console.print(f"recording: {detail.recording.path}")
    console.print(
        "[dim]bar: [cyan]█[/] STT final, [magenta]█[/] model + TTS to first audio, "
        f"[green]█[/] to first frame sent; one cell = {BAR_MS_PER_CELL} ms[/]"
    )
    return 0


def _turn_line(turn: Turn, call_started: datetime | None) -> Text:
    at = utc(turn.started_at)
    offset = (at - call_started).total_seconds() if at and call_started else 0.0
    who = "caller" if turn.role == "user" else "bot   "
    line = Text(f"{offset:7.2f}s  {who}  ", style="bold" if turn.role == "user" else "")
    if turn.interrupted:
        line.append(turn.heard_text or "", style="")
        unheard = turn.text[len(turn.heard_text or "") :]
        if unheard:
            line.append(unheard, style="strike dim")
        line.append("  [interrupted]", style="yellow")
    else:
        line.append(turn.text)
    return line


def latency_bar(latency_ms: dict[str, float]) -> Text | None:
    """STT / model+TTS / send segments, each measured from the endpoint, as one bar."""
    first_frame = latency_ms.get("first_frame")
    first_audio = latency_ms.get("first_audio")
    if first_frame is None and first_audio is None:
        return None
    stt = latency_ms.get("stt", 0.0)
    audio = first_audio if first_audio is not None else stt
    frame = first_frame if first_frame is not None else audio
    bar = Text()
    cells = 0
    for start, end, style in ((0.0, stt, "cyan"), (stt, audio, "magenta"), (audio, frame, "green")):
        width = min(round(max(0.0, end - start) / BAR_MS_PER_CELL), BAR_MAX_CELLS - cells)
        bar.append("█" * width, style=style)
        cells += width
    parts = [f"{k} {v:.0f}" for k, v in (("stt", stt), ("audio", audio), ("frame", frame))]
    bar.append(f"  {frame:.0f} ms  ({', '.join(parts)})", style="dim")
    return bar


# ------------------------------------------------------------------ call


def _call(args: argparse.Namespace) -> int:
    from callbridge.twilio.rest import TwilioRest, TwilioRestError

    settings = load_settings()
    console = Console()
    caller_id = args.from_number or settings.from_number
    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    problems = [
        "TWILIO_ACCOUNT_SID is not set" if not settings.account_sid else "",
        "TWILIO_AUTH_TOKEN is not set" if not token else "",
        "PUBLIC_URL is not set (Twilio fetches the call's TwiML from it)"
        if not settings.public_url
        else "",
        "no caller ID: pass --from or set TWILIO_PHONE_NUMBER" if not caller_id else "",
    ]
    if any(problems):
        raise ConfigError("; ".join(p for p in problems if p))
    assert caller_id is not None and settings.public_url is not None
    rest = TwilioRest(settings.account_sid, token, base_url=settings.twilio_api_base_url)

    async def place() -> str:
        sid = await rest.create_call(
            to=args.to,
            from_=caller_id,
            url=f"{settings.public_url}/voice",
            status_callback=f"{settings.public_url}/status",
        )
        now = datetime.now(UTC)
        database = Database.from_settings(settings)
        try:
            await database.migrate()
            async with database.sessions() as session, session.begin():
                seen = CallSeen(
                    sid=sid,
                    at=now,
                    from_number=caller_id,
                    to_number=args.to,
                    direction="outbound-api",
                    status="queued",
                )
                await apply(session, seen)
                await apply(session, EventHappened(sid=sid, at=now, kind="cli_placed"))
        finally:
            await database.dispose()
        return sid

    try:
        sid = asyncio.run(place())
    except TwilioRestError as exc:
        console.print(f"[red]call failed:[/] {exc}")
        return EXIT_FAILED
    console.print(f"Calling {args.to} from {caller_id}: {sid}")
    console.print(f"Follow it with: callbridge calls show {sid}")
    return 0


# ------------------------------------------------------------------ helpers


async def _read(settings: Settings, query: Any) -> object | None:
    """Run ``query(database)`` if the schema is there; None (and a hint) if it is not."""
    database = Database.from_settings(settings)
    try:
        state = await database.schema_state()
        if state.current is None:
            Console().print(
                f"No call record yet at {database.safe_url}: `callbridge serve` creates it."
            )
            return None
        result: object = await query(database)
        return result
    finally:
        await database.dispose()


def _where(settings: Settings) -> str:
    return Database.from_settings(settings).safe_url


def _iso_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected an ISO time like 2025-06-10T08:00, got {value!r}"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
