"""Alembic migrations for Herald's schema."""
