"""The call record's tables: calls, their turns, their events, their recordings.

Times are wall-clock UTC (``timestamptz`` on Postgres; SQLite keeps them naive, so reads
go through :func:`utc`). Every child row belongs to a call row and goes with it.
The migrations in ``store/migrations`` create exactly these tables; a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Call", "Event", "Recording", "Turn", "utc"]


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we stored was UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it from the class
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class Call(Base):
    __tablename__ = "calls"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream_sid: Mapped[str | None] = mapped_column(String(64))
    from_number: Mapped[str] = mapped_column(String(64), default="")
    to_number: Mapped[str] = mapped_column(String(64), default="")
    direction: Mapped[str] = mapped_column(String(32), default="inbound")
    status: Mapped[str] = mapped_column(String(32), default="in-progress")
    assistant: Mapped[str] = mapped_column(String(128), default="")
    outcome: Mapped[str | None] = mapped_column(String(64))
    instance: Mapped[str | None] = mapped_column(String(128))  # who serves its stream
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_calls_started_at", "started_at"),
        Index("ix_calls_status", "status"),
        Index("ix_calls_from_number", "from_number"),
        Index("ix_calls_to_number", "to_number"),
        Index("ix_calls_assistant_started_at", "assistant", "started_at"),
    )


class Turn(Base):
    """One finished turn; ``seq`` orders them within the call."""

    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(ForeignKey("calls.sid", ondelete="CASCADE"))
    seq: Mapped[int]
    role: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    heard_text: Mapped[str | None] = mapped_column(Text)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime]
    # The breakdown people sort by ("where was the bot slow"), each from the endpoint.
    stt_ms: Mapped[float | None] = mapped_column(Float)
    first_audio_ms: Mapped[float | None] = mapped_column(Float)
    first_frame_ms: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        UniqueConstraint("call_sid", "seq", name="uq_turns_call_seq"),
        Index("ix_turns_call_sid_first_frame", "call_sid", "first_frame_ms"),
        Index("ix_turns_started_at_first_frame", "started_at", "first_frame_ms"),
    )


class Event(Base):
    """A typed fact about a call (status callback, barge-in, provider error, gap…)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(ForeignKey("calls.sid", ondelete="CASCADE"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(48))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        Index("ix_events_call_sid_at", "call_sid", "at"),
        Index("ix_events_kind_call_sid", "kind", "call_sid"),
        Index("ix_events_kind_at", "kind", "at"),
    )


class Recording(Base):
    __tablename__ = "recordings"

    call_sid: Mapped[str] = mapped_column(
        ForeignKey("calls.sid", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024))
    rate_hz: Mapped[int]
    channels: Mapped[int]
    duration_ms: Mapped[int | None]  # None until the call ends (or forever, after a crash)
    created_at: Mapped[datetime]
