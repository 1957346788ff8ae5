"""The call record: calls, turns, events, recordings.

Revision ID: 0001
Revises:
Create Date: 2025-06-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("sid", sa.String(64), primary_key=True),
        sa.Column("stream_sid", sa.String(64), nullable=True),
        sa.Column("from_number", sa.String(64), nullable=False),
        sa.Column("to_number", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("assistant", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_calls_status", "calls", ["status"])
    op.create_index("ix_calls_from_number", "calls", ["from_number"])
    op.create_index("ix_calls_to_number", "calls", ["to_number"])
    op.create_table(
        "turns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "call_sid",
            sa.String(64),
            sa.ForeignKey("calls.sid", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("heard_text", sa.Text, nullable=True),
        sa.Column("interrupted", sa.Boolean, nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=False),
        sa.Column("stt_ms", sa.Float, nullable=True),
        sa.Column("first_audio_ms", sa.Float, nullable=True),
        sa.Column("first_frame_ms", sa.Float, nullable=True),
        sa.Column("latency_ms", sa.JSON, nullable=False),
        sa.UniqueConstraint("call_sid", "seq", name="uq_turns_call_seq"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "call_sid",
            sa.String(64),
            sa.ForeignKey("calls.sid", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", _TS, nullable=False),
        sa.Column("kind", sa.String(48), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_call_sid_at", "events", ["call_sid", "at"])
    op.create_table(
        "recordings",
        sa.Column(
            "call_sid",
            sa.String(64),
            sa.ForeignKey("calls.sid", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("rate_hz", sa.Integer, nullable=False),
        sa.Column("channels", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("recordings")
    op.drop_index("ix_events_call_sid_at", table_name="events")
    op.drop_table("events")
    op.drop_table("turns")
    for name in ("ix_calls_to_number", "ix_calls_from_number", "ix_calls_status"):
        op.drop_index(name, table_name="calls")
    op.drop_index("ix_calls_started_at", table_name="calls")
    op.drop_table("calls")
