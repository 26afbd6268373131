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


def _usage_storage(raw: str) -> str:
    value = _nonempty(raw)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("memory", "redis", "rediss") or (scheme == "memory" and rest):
        raise ValueError("must be memory:// or a Redis URL: redis://host:port/db or rediss://host:port/db")
    return value


def _key_prefix(raw: str) -> str:
    value = _nonempty(raw)
    if any(c.isspace() for c in value):
        raise ValueError("must not contain spaces")
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


#: Hosts a JWKS URL may reach over plain http (a test's or a sidecar's endpoint); anything else needs https.
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _jwks_url(raw: str) -> str:
    """An https URL (http only to a loopback host): keys fetched over plain http could be replaced in transit."""
    from urllib.parse import urlsplit

    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError("must be https (plain http only to a loopback host): keys fetched in the clear "
                         "could be replaced on the way")
    return value


def _pem_text(raw: str) -> str:
    """The PEM text itself, or the path of a file holding it; returns the text, unchecked.

    The error names only the kind of failure: a mangled key taken for a path would
    otherwise be echoed into the message (and the log).
    """
    value = raw.strip()
    if value.startswith("-----BEGIN"):
        return value
    try:
        return Path(value).expanduser().read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"is neither PEM text nor a readable PEM file ({type(exc).__name__})") from None


def _jwt_public_key(raw: str) -> str:
    """The PEM text itself, or the path of a file holding it; returns the PEM text, checked."""
    value = _pem_text(raw)
    load_rsa_public_key(value)
    return value


def load_rsa_private_key(pem: str) -> Any:
    """The RSA private key of a PEM text (unencrypted); ValueError when it is none."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a readable, unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("must be an RSA private key (GitHub Apps sign with RS256)")
    return key


def _github_private_key(raw: str) -> str:
    """The App's private key: the PEM text itself, or the path of the .pem file GitHub gave; its text."""
    value = _pem_text(raw)
    load_rsa_private_key(value)
    return value


def _http_url(raw: str) -> str:
    value = _nonempty(raw)
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL, such as https://api.github.com")
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
    Setting("DB_CONNECT_TIMEOUT", "DB_CONNECT_TIMEOUT", _positive_int, 10,
            "Seconds a new database connection may take to connect and log in before the request gets 503 "
            "(not a host name lookup: resolv.conf's options bound that)."),
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
    Setting("USAGE_METERING", "USAGE_METERING", _flag, True,
            "Count every authenticated tenant request (api_requests) and enforce the plans' monthly limits "
            "(max_api_requests_per_month). Off: nothing is counted and no monthly limit applies."),
    Setting("USAGE_FLUSH_SECONDS", "USAGE_FLUSH_SECONDS", _positive_int, 5,
            "Seconds between two writes of a process's usage counts to public.usage_counters; also how long "
            "a process reuses a stored count for the monthly limit. A crash loses at most this much counting."),
    Setting("USAGE_STORAGE_URI", "USAGE_STORAGE_URI", _usage_storage, "memory://",
            "Where counters are counted: memory:// (each process, flushed every USAGE_FLUSH_SECONDS; the monthly "
            "limit is exact within a process) or redis://host:port/db, rediss://... (one running total shared by "
            "every process and host: the monthly limit is exact; still flushed to public.usage_counters)."),
    Setting("USAGE_KEY_PREFIX", "USAGE_KEY_PREFIX", _key_prefix, "tenantry-usage",
            "Prefix of the usage keys in USAGE_STORAGE_URI's Redis ({prefix}:YYYY-MM, {prefix}:dirty): "
            "deployments (or tests) sharing a Redis each use their own."),
    Setting("USAGE_CLOSE_GRACE_SECONDS", "USAGE_CLOSE_GRACE_SECONDS", _non_negative_int, 300,
            "flask usage close-period refuses a month until this long after it ended, so the last counts of "
            "every process are flushed first (keep it well above USAGE_FLUSH_SECONDS)."),
    Setting("BILLING_CLAIM_SECONDS", "BILLING_CLAIM_SECONDS", _positive_int, 60,
            "Default lease of a billing-event claim: an event claimed and not acknowledged within it goes to "
            "the next consumer that claims (at-least-once delivery, docs/billing.md)."),
    Setting("TENANT_BASE_DOMAIN", "TENANT_BASE_DOMAIN", _base_domain, None,
            "Tenant hosts are <slug>.<this domain>: such a Host must name the credential's tenant, "
            "else 404. Unset: the Host is not checked."),
    Setting("JWT_SECRET", "JWT_SECRET", _jwt_secret, None,
            "HS256 secret (at least 32 bytes) for JWT bearer tokens. Needs JWT_AUDIENCE.", secret=True),
    Setting("JWT_PUBLIC_KEY", "JWT_PUBLIC_KEY", _jwt_public_key, None,
            "RSA public key (PEM text or a PEM file path, 2048 bits or more) for RS256 JWTs. Needs JWT_AUDIENCE."),
    Setting("JWT_JWKS_URL", "JWT_JWKS_URL", _jwks_url, None,
            "The identity provider's JWKS endpoint (https): RS256 JWTs are verified with the key their kid "
            "names, fetched and cached (key rotation without a restart). Not with JWT_PUBLIC_KEY. Needs "
            "JWT_AUDIENCE."),
    Setting("JWT_JWKS_CACHE_SECONDS", "JWT_JWKS_CACHE_SECONDS", _positive_int, 300,
            "Seconds the fetched JWKS is reused before it is fetched again."),
    Setting("JWT_JWKS_MIN_REFRESH_SECONDS", "JWT_JWKS_MIN_REFRESH_SECONDS", _non_negative_int, 30,
            "A token naming an unknown kid fetches the JWKS again at most once in this many seconds (0: every "
            "time), so forged kids cannot make the API hammer the identity provider."),
    Setting("JWT_AUDIENCE", "JWT_AUDIENCE", _nonempty, None,
            "The aud every JWT must carry; required when JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL is set."),
    Setting("JWT_ISSUER", "JWT_ISSUER", _nonempty, None,
            "When set, the iss every JWT must carry."),
    Setting("JWT_LEEWAY", "JWT_LEEWAY", _jwt_leeway, 30,
            "Seconds of clock skew allowed on a JWT's exp, nbf and iat (0 to 300)."),
    Setting("JWT_ROLE_SOURCE", "JWT_ROLE_SOURCE", _one_of("claim", "member"), "claim",
            "Where a JWT's role comes from. claim: its role claim (machine tokens). member: the token's sub, "
            "or its email with email_verified true, must match an active member of its tenant, whose role "
            "applies (docs/members.md)."),
    Setting("INVITATION_TTL_HOURS", "INVITATION_TTL_HOURS", _positive_int, 72,
            "Hours a member's invitation token stays valid (POST /v1/members); accepting later is 410."),
    Setting("CONSOLE_ENABLED", "CONSOLE_ENABLED", _flag, True,
            "Serve the operator console at /console/ (off: no such route)."),
    Setting("SECRET_KEY", "SECRET_KEY", _secret_key, None,
            "Signs the console's session cookie (at least 32 bytes). Required with DATABASE_URL set while "
            "the console is on; unset in embedded mode: generated once into INSTANCE_PATH/secret_key.",
            secret=True),
    Setting("CONSOLE_IDLE_MINUTES", "CONSOLE_IDLE_MINUTES", _positive_int, 30,
            "Minutes without a request after which a console session ends."),
    Setting("CONSOLE_COUNTS_TTL_SECONDS", "CONSOLE_COUNTS_TTL_SECONDS", _non_negative_int, 10,
            "Seconds the console's overview reuses its tenant counts, per process (0: counted on every "
            "request); the page says when they were counted."),
    Setting("TRUSTED_PROXY_COUNT", "TRUSTED_PROXY_COUNT", _non_negative_int, 0,
            "Proxies in front of the app that append to X-Forwarded-For: the client address is the entry "
            "that many from the right (0: the peer's address; X-Forwarded-For is ignored)."),
    Setting("GITHUB_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET", _nonempty, None,
            "The GitHub App's webhook secret: POST /v1/webhooks/github verifies X-Hub-Signature-256 with it. "
            "Unset: no such route (404, none in the OpenAPI document). See docs/github.md.", secret=True),
    Setting("GITHUB_WEBHOOK_SECRET_PREVIOUS", "GITHUB_WEBHOOK_SECRET_PREVIOUS", _nonempty, None,
            "While rotating the webhook secret: the old one, still accepted beside GITHUB_WEBHOOK_SECRET.",
            secret=True),
    Setting("GITHUB_DEFAULT_PLAN", "GITHUB_DEFAULT_PLAN", _nonempty, "free",
            "The plan of a tenant provisioned from a GitHub App installation."),
    Setting("GITHUB_APP_ID", "GITHUB_APP_ID", _positive_int, None,
            "The GitHub App's id, for repository sync (flask tenants github-sync). Needs GITHUB_PRIVATE_KEY."),
    Setting("GITHUB_PRIVATE_KEY", "GITHUB_PRIVATE_KEY", _github_private_key, None,
            "The GitHub App's private key: the PEM text, or the path of the .pem file GitHub issued.",
            secret=True),
    Setting("GITHUB_API_URL", "GITHUB_API_URL", _http_url, "https://api.github.com/",
            "The GitHub REST API (https://<host>/api/v3/ for GitHub Enterprise Server)."),
    Setting("GITHUB_RATE_LIMIT_MAX_WAIT", "GITHUB_RATE_LIMIT_MAX_WAIT", _non_negative_int, 900,
            "Longest wait, in seconds, a sync accepts when GitHub's rate limit says to wait; a longer one "
            "ends that tenant's sync with an error (the others go on)."),
    Setting("GITHUB_DELIVERY_RETENTION_DAYS", "GITHUB_DELIVERY_RETENTION_DAYS", _positive_int, 30,
            "Days a webhook delivery record is kept; `flask github deliveries purge` deletes older ones."),
)

#: Settings checked again by :func:`validate`: they may arrive as a mapping, not the environment.
_REVALIDATED = (
    "LOG_FORMAT", "SECRET_KEY", "TENANT_BASE_DOMAIN", "USAGE_STORAGE_URI", "USAGE_KEY_PREFIX",
    "JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_AUDIENCE", "JWT_ISSUER", "JWT_LEEWAY", "JWT_ROLE_SOURCE", "JWT_JWKS_URL",
    "GITHUB_APP_ID", "GITHUB_PRIVATE_KEY",
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
    has_key = any(values.get(key) is not None for key in ("JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_JWKS_URL"))
    if values.get("JWT_JWKS_URL") is not None and values.get("JWT_PUBLIC_KEY") is not None:
        raise ConfigError("JWT_JWKS_URL and JWT_PUBLIC_KEY are both set: RS256 keys come from one of them.")
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
    if (values.get("GITHUB_APP_ID") is None) != (values.get("GITHUB_PRIVATE_KEY") is None):
        raise ConfigError(
            "GITHUB_APP_ID and GITHUB_PRIVATE_KEY go together: repository sync authenticates as the App with both."
        )
    if values.get("GITHUB_WEBHOOK_SECRET_PREVIOUS") is not None and values.get("GITHUB_WEBHOOK_SECRET") is None:
        raise ConfigError(
            "GITHUB_WEBHOOK_SECRET_PREVIOUS is set but GITHUB_WEBHOOK_SECRET is not: the previous secret is "
            "only accepted beside the current one while rotating."
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
