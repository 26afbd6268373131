"""Tenantry: a schema-per-tenant Flask JSON backend on PostgreSQL.

Importing the package imports nothing else: ``create_app`` (from :mod:`app.factory`)
is loaded on first use, so the tenancy core imports without Flask, flask-smorest
and marshmallow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .factory import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .factory import create_app

        return create_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
