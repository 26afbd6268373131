"""Alembic environment of the public schema (plans, tenants, API keys). Run via ``flask db``."""
