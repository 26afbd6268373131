"""Settings from the environment: the only module that reads ``os.environ``.

Each setting has a type, a default and a line of documentation; the README's
configuration table is this table. A bad value fails at startup with a message that
names the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, MutableMapping
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
    #: Never echo the value in an error message.
    secret: bool = False

    def shown(self, raw: object) -> str:
        """The value as an error message may show it: hidden when secret, shortened when long."""
        if self.secret:
            return "<hidden>"
        text = repr(raw)
        return text if len(text) <= 80 else text[:77] + "..."


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


_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _base_domain(raw: str) -> str:
    """A DNS name such as ``tenants.example.com``: lowercased, no port, scheme or trailing dot."""
    value = _nonempty(raw).lower().strip(".")
    labels = value.split(".")
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError("must be a DNS name such as tenants.example.com (no scheme, port or path)")
    return value


#: HS256 signs with SHA-256: a shorter secret weakens it (RFC 7518, section 3.2).
JWT_SECRET_MIN_BYTES = 32
#: RSA moduli below this are refused for RS256.
JWT_RSA_MIN_BITS = 2048
JWT_LEEWAY_MAX = 300


def _jwt_secret(raw: str) -> str:
    if raw.lstrip().startswith(("-----BEGIN", "ssh-")):
        raise ValueError("looks like a key, not a shared secret; an RSA public key goes in JWT_PUBLIC_KEY")
    if len(raw.encode()) < JWT_SECRET_MIN_BYTES:
        raise ValueError(f"must be at least {JWT_SECRET_MIN_BYTES} bytes (HS256 needs a 256-bit secret)")
    return raw


def load_rsa_public_key(pem: str) -> Any:
    """The RSA public key of a PEM text; ValueError when it is none (or too short for RS256)."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a readable PEM public key ({exc})") from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError("must be an RSA public key (RS256)")
    if key.key_size < JWT_RSA_MIN_BITS:
        raise ValueError(f"the RSA key has {key.key_size} bits; RS256 needs at least {JWT_RSA_MIN_BITS}")
    return key


def _jwt_public_key(raw: str) -> str:
    """The PEM text itself, or the path of a file holding it; returns the PEM text, checked."""
    value = raw.strip()
    if not value.startswith("-----BEGIN"):
        try:
            value = Path(value).expanduser().read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"is neither PEM text nor a readable PEM file ({exc})") from None
    load_rsa_public_key(value)
    return value


def _jwt_leeway(raw: str) -> int:
    value = _non_negative_int(raw)
    if value > JWT_LEEWAY_MAX:
        raise ValueError(f"must be at most {JWT_LEEWAY_MAX} seconds")
    return value


#: The console's session cookie is signed with HMAC-SHA1 by itsdangerous over a key derived
#: from SECRET_KEY: a short secret would be guessable offline from any cookie.
SECRET_KEY_MIN_BYTES = 32


def _secret_key(raw: str) -> str:
    if len(raw.encode()) < SECRET_KEY_MIN_BYTES:
        raise ValueError(f"must be at least {SECRET_KEY_MIN_BYTES} bytes (python -c 'import secrets; "
                         "print(secrets.token_urlsafe(32))')")
    return raw


def _one_of(*choices: str) -> Callable[[str], str]:
    """A parser for a word among ``choices`` (any case, surrounding spaces ignored)."""
    listed = ", ".join(choices[:-1]) + " or " + choices[-1]

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be {listed}")
        return value

    return parse


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be on or off (or true/false, yes/no, 1/0)")


def _directory(raw: str) -> str:
    value = _nonempty(raw)
    if not Path(value).is_dir():
        raise ValueError("must be an existing directory")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", "SQLALCHEMY_DATABASE_URI", _nonempty, None,
            "PostgreSQL URL. Unset: an embedded PostgreSQL under INSTANCE_PATH, migrated automatically."),
    Setting("ADMIN_TOKEN", "ADMIN_TOKEN", _nonempty, None,
            "Bearer token for /v1/admin/*. Unset with DATABASE_URL set: the admin API refuses every call. "
            "Unset in embedded mode: generated once into INSTANCE_PATH/admin_token.", secret=True),
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
    Setting("DB_RECYCLE_AFTER_TENANTS", "DB_RECYCLE_AFTER_TENANTS", _non_negative_int, 500,
            "A pooled connection is closed when it returns to the pool having served this many distinct "
            "tenants (0: never); bounds its backend's catalog cache to about this many x 48 KB."),
    Setting("DB_PREPARE_THRESHOLD", "DB_PREPARE_THRESHOLD", _prepare_threshold, 5,
            "psycopg's prepare_threshold: executions of a query before it becomes a server-side prepared "
            "statement. off: never (needed behind PgBouncer in transaction mode before 1.21, or without "
            "max_prepared_statements)."),
    Setting("MAX_REQUEST_BYTES", "MAX_CONTENT_LENGTH", _positive_int, 1024 * 1024,
            "Largest request body accepted; larger ones get 413."),
    Setting("TENANT_MIGRATIONS_LOCATION", "TENANT_MIGRATIONS_LOCATION", _nonempty, None,
            "Alternative tenant migration scripts directory (defaults to the bundled tenant_migrations)."),
    Setting("LOG_LEVEL", "LOG_LEVEL", _nonempty, "INFO",
            "Python logging level (unset: WARNING for flask commands other than run)."),
    Setting("LOG_FORMAT", "LOG_FORMAT", _one_of("console", "json"), "console",
            "console: readable lines for a terminal; json: one JSON object per line (production). "
            "Fields: docs/operations.md, Observability."),
    Setting("METRICS_ENABLED", "METRICS_ENABLED", _flag, True,
            "Serve Prometheus metrics at /metrics (off: no such route)."),
    Setting("METRICS_TOKEN", "METRICS_TOKEN", _nonempty, None,
            "When set, /metrics wants 'Authorization: Bearer <this>'. Unset: /metrics is open; keep it "
            "off the public network (docs/operations.md).", secret=True),
    Setting("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROC_DIR", _directory, None,
            "An empty, writable directory shared by the worker processes of one server (gunicorn): "
            "metrics are then summed over all of them. Read by prometheus-client itself too, so it must "
            "be in the environment; empty it before each start."),
    Setting("TENANT_ROLES", "TENANT_ROLES", _one_of("auto", "on", "off"), "auto",
            "A database role per tenant (owner of its schema, taken by every tenant transaction): on, off, "
            "or auto (on only where bench/roles.py found it cheap: no server so far; see docs/security.md)."),
    Setting("RATELIMIT_STORAGE_URI", "RATELIMIT_STORAGE_URI", _ratelimit_storage, "memory://",
            "Where per-tenant rate-limit counters live: memory:// (each process counts on its own) "
            "or redis://host:port/db (shared by every process)."),
    Setting("TENANT_BASE_DOMAIN", "TENANT_BASE_DOMAIN", _base_domain, None,
            "Tenant hosts are <slug>.<this domain>: such a Host must name the credential's tenant, "
            "else 404. Unset: the Host is not checked."),
    Setting("JWT_SECRET", "JWT_SECRET", _jwt_secret, None,
            "HS256 secret (at least 32 bytes) for JWT bearer tokens. Needs JWT_AUDIENCE.", secret=True),
    Setting("JWT_PUBLIC_KEY", "JWT_PUBLIC_KEY", _jwt_public_key, None,
            "RSA public key (PEM text or a PEM file path, 2048 bits or more) for RS256 JWTs. Needs JWT_AUDIENCE."),
    Setting("JWT_AUDIENCE", "JWT_AUDIENCE", _nonempty, None,
            "The aud every JWT must carry; required when JWT_SECRET or JWT_PUBLIC_KEY is set."),
    Setting("JWT_ISSUER", "JWT_ISSUER", _nonempty, None,
            "When set, the iss every JWT must carry."),
    Setting("JWT_LEEWAY", "JWT_LEEWAY", _jwt_leeway, 30,
            "Seconds of clock skew allowed on a JWT's exp, nbf and iat (0 to 300)."),
    Setting("CONSOLE_ENABLED", "CONSOLE_ENABLED", _flag, True,
            "Serve the operator console at /console/ (off: no such route)."),
    Setting("SECRET_KEY", "SECRET_KEY", _secret_key, None,
            "Signs the console's session cookie (at least 32 bytes). Required with DATABASE_URL set while "
            "the console is on; unset in embedded mode: generated once into INSTANCE_PATH/secret_key.",
            secret=True),
    Setting("CONSOLE_IDLE_MINUTES", "CONSOLE_IDLE_MINUTES", _positive_int, 30,
            "Minutes without a request after which a console session ends."),
)

#: Settings checked again by :func:`validate`: they may arrive as a mapping, not the environment.
_REVALIDATED = (
    "LOG_FORMAT", "SECRET_KEY", "TENANT_BASE_DOMAIN",
    "JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_AUDIENCE", "JWT_ISSUER", "JWT_LEEWAY",
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
            raise ConfigError(f"{setting.env}={setting.shown(raw)} is invalid: {exc}") from None
    return found


def validate(values: MutableMapping[str, Any]) -> None:
    """Check the settings together, whether they came from the environment or a mapping.

    Normalises the authentication settings in place (a PEM path becomes its text, the
    base domain is lowercased); raises :class:`ConfigError` naming the variable.
    """
    by_key = {s.key: s for s in SETTINGS}
    for key in _REVALIDATED:
        value = values.get(key)
        if value is None:
            continue
        setting = by_key[key]
        raw = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        try:
            if not isinstance(raw, str):
                raise ValueError("must be a string")
            values[key] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{setting.env}={setting.shown(value)} is invalid: {exc}") from None
    has_key = values.get("JWT_SECRET") is not None or values.get("JWT_PUBLIC_KEY") is not None
    if has_key and values.get("JWT_AUDIENCE") is None:
        raise ConfigError(
            "JWT_AUDIENCE must be set when JWT_SECRET or JWT_PUBLIC_KEY is: "
            "every JWT is checked against the audience it was issued for."
        )
    for key in ("JWT_AUDIENCE", "JWT_ISSUER"):
        if values.get(key) is not None and not has_key:
            raise ConfigError(
                f"{key} is set but neither JWT_SECRET nor JWT_PUBLIC_KEY is: JWT authentication would stay off."
            )
    multiproc = values.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR") != multiproc:
        raise ConfigError(
            "PROMETHEUS_MULTIPROC_DIR must be set in the environment (to the same directory): "
            "prometheus-client reads it there when it starts, and would otherwise count in memory only."
        )


def sqlalchemy_url(url: str) -> str:
    """Use psycopg 3 whatever scheme the URL was written with (postgres://, postgresql://)."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def instance_path(value: str) -> Path:
    return Path(value).expanduser().resolve()
