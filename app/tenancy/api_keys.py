"""Tenant API keys: issued once, stored as a hash, looked up by a public prefix.

A key reads ``tnt_<prefix>_<secret>``. The prefix (12 hex characters) is stored in the
clear and indexed, so a lookup is one indexed query; the secret (256 random bits) is
stored only as its SHA-256. A fast hash is right here: slow hashes (bcrypt, argon2)
protect low-entropy passwords against guessing, and a 256-bit random secret cannot be
guessed, while a slow hash would be paid on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models.public import API_KEY_ROLES, ApiKey, Tenant

from .errors import InvalidApiKey, TenantSuspended

TOKEN_PREFIX = "tnt"
#: ``last_used_at`` is refreshed at most this often, so reads do not each cost a write.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class IssuedApiKey:
    """A freshly created key. ``token`` exists only here: it is never stored."""

    id: int
    prefix: str
    role: str
    token: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_api_key(session: Session, tenant: Tenant, role: str = "admin") -> IssuedApiKey:
    """Create a key for ``tenant`` in the session's transaction (flushed, not committed)."""
    if role not in API_KEY_ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {API_KEY_ROLES}")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(tenant_id=tenant.id, prefix=prefix, secret_hash=hash_secret(secret), role=role)
    session.add(key)
    session.flush()  # generate api_keys.id and created_at for the caller's response
    return IssuedApiKey(id=key.id, prefix=prefix, role=role, token=f"{TOKEN_PREFIX}_{prefix}_{secret}")


def looks_like_api_key(token: str) -> bool:
    """Whether ``token`` has the shape of a tenant key (used to answer 403, not 401, on admin)."""
    return token.startswith(TOKEN_PREFIX + "_")


def authenticate(session: Session, token: str) -> tuple[ApiKey, Tenant]:
    """Resolve a bearer token to its key and tenant, or raise.

    :raise InvalidApiKey: malformed, unknown, revoked, or the secret does not match.
    :raise TenantSuspended: the key is valid but its tenant is suspended.
    """
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        raise InvalidApiKey("Malformed API key.")
    _, prefix, secret = parts
    row = session.execute(
        select(ApiKey, Tenant).join(Tenant, Tenant.id == ApiKey.tenant_id).where(
            ApiKey.prefix == prefix
        )
    ).first()
    # Compare against a dummy hash when the prefix is unknown, so timing does not tell
    # an attacker which prefixes exist.
    expected = row[0].secret_hash if row else hash_secret(prefix)
    if not hmac.compare_digest(expected, hash_secret(secret)) or row is None:
        raise InvalidApiKey("Unknown API key.")
    key, tenant = row
    if key.revoked_at is not None:
        raise InvalidApiKey("This API key has been revoked.")
    if tenant.status != "active":
        raise TenantSuspended(tenant.slug)
    _touch(session, key)
    return key, tenant


def _touch(session: Session, key: ApiKey) -> None:
    now = datetime.now(UTC)
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        session.execute(
            update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now),
            execution_options={"synchronize_session": False},
        )
