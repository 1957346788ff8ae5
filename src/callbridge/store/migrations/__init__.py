"""Alembic migrations for the call record; run by ``Database.migrate`` at start-up."""
