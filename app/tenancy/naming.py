"""Tenant slugs and the schema names derived from them.

Slugs come from users and become PostgreSQL identifiers, so they are attack surface.
A slug is validated against a strict pattern, the schema name is *derived* from the
validated slug (never taken from input), and every identifier is quoted when it is
put into SQL, even though the pattern already excludes anything that would need it.
"""

from __future__ import annotations

import re

from .errors import InvalidSlug

SCHEMA_PREFIX = "t_"
#: ``t_`` + 40 characters = 42 bytes, well inside PostgreSQL's 63-byte identifier limit.
MAX_SLUG_LENGTH = 40
SLUG_PATTERN = re.compile(rf"[a-z][a-z0-9_]{{1,{MAX_SLUG_LENGTH - 1}}}")

#: Names that would be confusing or dangerous as a tenant, even with the ``t_`` prefix:
#: PostgreSQL's own schemas and roles, and words our URLs and CLI use.
RESERVED_SLUGS = frozenset(
    {
        "public",
        "information_schema",
        "postgres",
        "template0",
        "template1",
        "default",
        "admin",
        "root",
        "system",
        "tenant",
        "tenants",
        "api",
        "current_user",
        "session_user",
        "user",
        "none",
        "null",
    }
)
RESERVED_PREFIXES = ("pg_",)

_SCHEMA_PATTERN = re.compile(SCHEMA_PREFIX + SLUG_PATTERN.pattern)
#: A tenant's database role: ``tr`` + 8 hex digits of the database + ``_`` + slug (app.tenancy.roles).
_ROLE_PATTERN = re.compile(r"tr[0-9a-f]{8}_" + SLUG_PATTERN.pattern)


def validate_slug(slug: object) -> str:
    """Return ``slug`` if it may name a tenant, else raise :class:`InvalidSlug`.

    Rules: ``^[a-z][a-z0-9_]{1,39}$`` (lowercase ASCII letter first, then letters,
    digits, underscore; 2 to 40 characters), and not a reserved word or prefix.
    """
    if not isinstance(slug, str):
        raise InvalidSlug(slug, "Must be a string.")
    if not SLUG_PATTERN.fullmatch(slug):
        raise InvalidSlug(
            slug,
            "Must be 2-40 characters: a lowercase letter, then lowercase letters, "
            "digits or underscores.",
        )
    if slug in RESERVED_SLUGS or slug.startswith(RESERVED_PREFIXES):
        raise InvalidSlug(slug, f"{slug!r} is reserved.")
    return slug


def schema_name_for(slug: str) -> str:
    """The schema holding a tenant's data: ``t_<slug>``, from a validated slug."""
    return SCHEMA_PREFIX + validate_slug(slug)


def is_tenant_schema_name(name: str) -> bool:
    """Whether ``name`` has the shape of a schema this package creates."""
    return bool(_SCHEMA_PATTERN.fullmatch(name))


def quote_ident(name: str) -> str:
    """Quote a tenant schema name for SQL, refusing anything that is not one.

    The check is deliberately redundant with :func:`schema_name_for`: an identifier
    that reaches SQL text has been validated at least twice.
    """
    if not is_tenant_schema_name(name):
        raise InvalidSlug(name, "Not a tenant schema name.")
    return '"' + name.replace('"', '""') + '"'


def validate_role(name: str) -> str:
    """Return ``name`` if it has the shape of a tenant role (app.tenancy.roles), else raise."""
    if not _ROLE_PATTERN.fullmatch(name):
        raise InvalidSlug(name, "Not a tenant role name.")
    return name


def quote_role(name: str) -> str:
    """Quote a tenant role name for SQL, refusing anything that is not one (like :func:`quote_ident`)."""
    return '"' + validate_role(name) + '"'
