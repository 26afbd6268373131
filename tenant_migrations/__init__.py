"""Alembic environment of one tenant schema. Run via provisioning and ``flask tenants``."""
