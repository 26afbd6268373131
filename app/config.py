"""Settings from the environment: the only module that reads ``os.environ``.

Each setting has a type, a default and a line of documentation; the README's
configuration table is this table. A bad value fails at startup with a message that
names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """An environment variable has a value Tenantry cannot use."""


@dataclass(frozen=True)
class Setting:
    env: str
    key: str
    parse: Callable[[str], Any]
    default: Any
    doc: str


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def _prepare_threshold(raw: str) -> int | None:
    if raw.strip().lower() in {"off", "none"}:
        return None
    return _non_negative_int(raw)


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


#: Storages the rate limiter is installed for (the redis client is a dependency).
_RATELIMIT_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")


def _ratelimit_storage(raw: str) -> str:
    value = _nonempty(raw)
    scheme, sep, _ = value.partition("://")
    if not sep or scheme not in _RATELIMIT_SCHEMES:
        raise ValueError(f"must be memory:// or a Redis URL ({', '.join(s + '://' for s in _RATELIMIT_SCHEMES)})")
    return value


def _tenant_roles(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("auto", "on", "off"):
        raise ValueError("must be auto, on or off")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", "SQLALCHEMY_DATABASE_URI", _nonempty, None,
            "PostgreSQL URL. Unset: an embedded PostgreSQL under INSTANCE_PATH, migrated automatically."),
    Setting("ADMIN_TOKEN", "ADMIN_TOKEN", _nonempty, None,
            "Bearer token for /v1/admin/*. Unset with DATABASE_URL set: the admin API refuses every call. "
            "Unset in embedded mode: generated once into INSTANCE_PATH/admin_token."),
    Setting("INSTANCE_PATH", "INSTANCE_PATH", _nonempty, "instance",
            "Local state of the development server (embedded PostgreSQL data, dev admin token)."),
    Setting("DB_POOL_SIZE", "DB_POOL_SIZE", _positive_int, 10,
            "Connections kept open per process."),
    Setting("DB_MAX_OVERFLOW", "DB_MAX_OVERFLOW", _non_negative_int, 10,
            "Extra connections allowed per process under burst."),
    Setting("DB_POOL_TIMEOUT", "DB_POOL_TIMEOUT", _positive_int, 10,
            "Seconds to wait for a free connection before answering 503."),
    Setting("DB_POOL_RECYCLE", "DB_POOL_RECYCLE", _positive_int, 1800,
            "Seconds before a pooled connection is replaced; bounds PostgreSQL's per-schema catalog cache."),
    Setting("DB_PREPARE_THRESHOLD", "DB_PREPARE_THRESHOLD", _prepare_threshold, 5,
            "psycopg's prepare_threshold: executions of a query before it becomes a server-side prepared "
            "statement. off: never (needed behind PgBouncer in transaction mode before 1.21, or without "
            "max_prepared_statements)."),
    Setting("MAX_REQUEST_BYTES", "MAX_CONTENT_LENGTH", _positive_int, 1024 * 1024,
            "Largest request body accepted; larger ones get 413."),
    Setting("TENANT_MIGRATIONS_LOCATION", "TENANT_MIGRATIONS_LOCATION", _nonempty, None,
            "Alternative tenant migration scripts directory (defaults to the bundled tenant_migrations)."),
    Setting("LOG_LEVEL", "LOG_LEVEL", _nonempty, "INFO", "Python logging level."),
    Setting("TENANT_ROLES", "TENANT_ROLES", _tenant_roles, "auto",
            "A database role per tenant (owner of its schema, taken by every tenant transaction): on, off, "
            "or auto (on where it is cheap: PostgreSQL 17+ and a user with CREATEROLE; see docs/security.md)."),
    Setting("RATELIMIT_STORAGE_URI", "RATELIMIT_STORAGE_URI", _ratelimit_storage, "memory://",
            "Where per-tenant rate-limit counters live: memory:// (each process counts on its own) "
            "or redis://host:port/db (shared by every process)."),
)


def defaults() -> dict[str, Any]:
    """Every setting at its default, keyed by its Flask config key."""
    return {s.key: s.default for s in SETTINGS}


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings present in the environment, parsed; raise :class:`ConfigError` naming a bad one."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is None or raw == "":
            continue
        try:
            found[setting.key] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{setting.env}={raw!r} is invalid: {exc}") from None
    return found


def sqlalchemy_url(url: str) -> str:
    """Use psycopg 3 whatever scheme the URL was written with (postgres://, postgresql://)."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def instance_path(value: str) -> Path:
    return Path(value).expanduser().resolve()
