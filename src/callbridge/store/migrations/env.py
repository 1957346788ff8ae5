"""Alembic's entry point, driven programmatically: the connection comes from
``Database.migrate`` through ``config.attributes`` (no alembic.ini, no URL here)."""

from __future__ import annotations

from alembic import context

from callbridge.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through callbridge.store.database.Database.migrate")

# Batch mode lets later ALTERs work on SQLite, which cannot alter most things in place.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
