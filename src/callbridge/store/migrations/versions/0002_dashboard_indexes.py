"""Indexes for the dashboard: filters by event kind, per-call turn figures, the overview.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = (
    # "had a fault / a barge-in": the calls having an event of these kinds.
    ("ix_events_kind_call_sid", "events", ["kind", "call_sid"]),
    # the overview's barge-ins and faults in a time window
    ("ix_events_kind_at", "events", ["kind", "at"]),
    # a call's slowest turn, read from the index alone
    ("ix_turns_call_sid_first_frame", "turns", ["call_sid", "first_frame_ms"]),
    # the overview's latency per hour, read from the index alone
    ("ix_turns_started_at_first_frame", "turns", ["started_at", "first_frame_ms"]),
    ("ix_calls_assistant_started_at", "calls", ["assistant", "started_at"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
