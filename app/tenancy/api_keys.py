"""Tenant API keys: issued once, stored as a hash, looked up by a public prefix.

A key reads ``tnt_<prefix>_<secret>``. The prefix (12 hex characters) is stored in the
clear and indexed, so a lookup is one indexed query; the secret (256 random bits) is
stored only as its SHA-256. A fast hash is right here: slow hashes (bcrypt, argon2)
protect low-entropy passwords against guessing, and a 256-bit random secret cannot be
guessed, while a slow hash would be paid on every request.

Managing keys (issue, list, revoke) is here too. Every tenant keeps at least one
active admin key: :func:`revoke_api_key` refuses to revoke the last one, and locks the
tenant's active admin keys while it decides, so two admins revoking each other at the
same moment cannot both succeed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.orm import Session

from app.models.public import API_KEY_ROLES, ApiKey, Plan, Tenant
from app.pagination import Page, decode_cursor, make_page

from . import binding
from .context import TenantBinding
from .errors import ApiKeyAlreadyRevoked, ApiKeyNotFound, InvalidApiKey, LastAdminKey, TenantPending, TenantSuspended

TOKEN_PREFIX = "tnt"
#: ``last_used_at`` is refreshed at most this often, so reads do not each cost a write.
LAST_USED_RESOLUTION = timedelta(seconds=60)
#: Longest key name (``api_keys.name``).
NAME_MAX = 100
#: Key ids are bigint; a larger number cannot name a key (and must not reach the database).
_ID_MAX = 2**63 - 1
#: What :func:`issue_api_key` makes a prefix of (``secrets.token_hex``): anything else names no
#: key, and is refused before it reaches the database (where a NUL byte would fail the query).
_PREFIX = re.compile(r"[0-9a-f]{1,32}")


@dataclass(frozen=True)
class IssuedApiKey:
    """A freshly created key. ``token`` exists only here: it is never stored."""

    id: int
    prefix: str
    role: str
    token: str
    name: str | None = None
    created_at: datetime | None = None
    created_by_member_id: int | None = None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_prefix_and_secret() -> tuple[str, str]:
    """A new key's public prefix (12 hex characters) and secret (256 random bits).

    Its token is ``tnt_<prefix>_<secret>``.
    """
    return secrets.token_hex(6), secrets.token_urlsafe(32)


def issue_api_key(
    session: Session, tenant: Tenant, role: str = "admin", *, name: str | None = None,
    created_by_member_id: int | None = None,
) -> IssuedApiKey:
    """Create a key for ``tenant`` in the session's transaction (flushed, not committed).

    ``created_by_member_id`` labels a key a person made (the acting member), else None.

    Role and name are validated by the callers (schemas, CLI options); here a bad one
    is a programming error.
    """
    if role not in API_KEY_ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {API_KEY_ROLES}")
    if name is not None and not 0 < len(name) <= NAME_MAX:
        raise ValueError(f"a key name has 1 to {NAME_MAX} characters")
    prefix, secret = new_prefix_and_secret()
    key = ApiKey(tenant_id=tenant.id, prefix=prefix, secret_hash=hash_secret(secret), role=role, name=name,
                 created_by_member_id=created_by_member_id)
    session.add(key)
    session.flush()  # generate api_keys.id and created_at for the caller's response
    return IssuedApiKey(
        id=key.id, prefix=prefix, role=role, token=f"{TOKEN_PREFIX}_{prefix}_{secret}",
        name=name, created_at=key.created_at, created_by_member_id=created_by_member_id,
    )


def list_api_keys(
    session: Session, tenant_id: int, *, limit: int = 50, cursor: str | None = None
) -> Page[ApiKey]:
    """One page of the tenant's keys in id order, revoked ones included (they show ``revoked_at``)."""
    stmt = select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.id).limit(limit + 1)
    after = decode_cursor(cursor, int)
    if after is not None:
        stmt = stmt.where(ApiKey.id > after)
    return make_page(session.scalars(stmt).all(), limit, lambda k: k.id)


def get_api_key(session: Session, tenant_id: int, key_id: int) -> ApiKey:
    """:raise ApiKeyNotFound: the tenant has no such key (another tenant's key included)."""
    key = None
    if 0 < key_id <= _ID_MAX:
        key = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id))
    if key is None:
        raise ApiKeyNotFound(key_id)
    return key


def revoke_api_key(session: Session, tenant_id: int, key_id: int) -> ApiKey:
    """Revoke one of the tenant's keys in the session's transaction; return it, revoked.

    An admin key is revoked only while another active admin key remains. The check
    holds under concurrency because it locks the tenant's active admin keys first
    (``SELECT ... FOR UPDATE``, in id order so two revokers queue instead of
    deadlocking): a concurrent revocation waits for this transaction, then re-reads
    the rows it waited for and no longer counts a key revoked meanwhile. Keys of other
    roles need no lock: the UPDATE's own ``revoked_at IS NULL`` makes a second
    revocation of one key find nothing.

    :raise ApiKeyNotFound: the tenant has no such key.
    :raise LastAdminKey: it is the tenant's last active admin key.
    :raise ApiKeyAlreadyRevoked: it was revoked before (by someone else, maybe just now).
    """
    key = get_api_key(session, tenant_id, key_id)
    if key.role == "admin":  # a role never changes, so reading it unlocked is safe
        active_admins = session.scalars(
            select(ApiKey.id)
            .where(ApiKey.tenant_id == tenant_id, ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.id)
            .with_for_update()
        ).all()
        if active_admins == [key_id]:
            raise LastAdminKey(key_id)
    revoked = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey.revoked_at),
        execution_options={"synchronize_session": False},
    ).scalar_one_or_none()
    if revoked is None:
        raise ApiKeyAlreadyRevoked(key_id)
    session.refresh(key)
    return key


def looks_like_api_key(token: str) -> bool:
    """Whether ``token`` has the shape of a tenant key (used to answer 403, not 401, on admin)."""
    return token.startswith(TOKEN_PREFIX + "_")


@dataclass(frozen=True, slots=True)
class AuthenticatedKey:
    """A key that :func:`authenticate` accepted, and what a request needs of its tenant.

    Plain values read by the lookup, not ORM objects: building and tracking three mapped
    objects (key, tenant, plan) cost about 0.3 ms of Python per request, and nothing
    downstream writes through them. ``id`` and ``last_used_at`` are the key's (what
    :func:`touch_last_used` reads).
    """

    id: int
    role: str
    last_used_at: datetime | None
    #: The key's tenant, as the request binds it.
    tenant: TenantBinding
    #: The tenant's plan budget (None: unlimited).
    rate_limit_per_minute: int | None
    #: The plan's monthly allowance of API requests (None: unlimited).
    max_api_requests_per_month: int | None = None


_keys, _tenants, _plans = ApiKey.__table__, Tenant.__table__, Plan.__table__
#: The key, its tenant and its plan by prefix, as plain columns (see AuthenticatedKey). Built
#: once: a statement built per request costs more Python than its round trip.
_LOOKUP = (
    select(
        _keys.c.id, _keys.c.role, _keys.c.last_used_at, _keys.c.tenant_id, _tenants.c.slug, _tenants.c.db_role,
        _plans.c.rate_limit_per_minute, _plans.c.max_api_requests_per_month,
        _keys.c.secret_hash, _keys.c.revoked_at, _tenants.c.status,
    )
    .select_from(
        _keys.join(_tenants, _tenants.c.id == _keys.c.tenant_id).join(_plans, _plans.c.id == _tenants.c.plan_id)
    )
    .where(_keys.c.prefix == bindparam("prefix"))
)
#: Where a binding lookup's reported search_path is: the first column after the lookup's own.
_REPORTED_PATH = len(_LOOKUP.selected_columns)
#: The same, binding the transaction it opens (see authenticate). The secret is checked
#: in Python, in constant time, not in SQL: the statement binds a live key's tenant,
#: and a wrong secret puts the deny path back before anything else runs.
_LOOKUP_AND_BIND = _LOOKUP.add_columns(*binding.binding_columns(
    good=and_(_keys.c.revoked_at.is_(None), _tenants.c.status == "active"),
    schema_name=_tenants.c.schema_name, slug=_tenants.c.slug, role=_tenants.c.db_role,
))


def authenticate(
    session: Session, token: str, *, touch: bool = True, bind: bool = False
) -> AuthenticatedKey:
    """Resolve a bearer token to its key and tenant, or raise.

    The database is read every time (no cache), so a revocation committed by any
    process is refused by every process from the next request on. With ``touch``,
    ``last_used_at`` is refreshed here (see :func:`touch_last_used`); the HTTP layer
    passes ``False`` and touches at the end of the request instead.

    With ``bind``, the same statement binds the transaction it opens: the key's tenant
    (search_path, ``application_name``, role) when the key is good, the deny path
    otherwise (:func:`app.tenancy.binding.opening_statement_binds`). A request then
    pays one round trip for "who is this, and which schema", not three.

    :raise InvalidApiKey: malformed, unknown, revoked, or the secret does not match.
    :raise TenantSuspended: the key is valid but its tenant is suspended.
    :raise TenantPending: the key is valid but its tenant is not activated yet.
    """
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not _PREFIX.fullmatch(parts[1]) or not parts[2]:
        raise InvalidApiKey(
            "Malformed API key: the tenant API takes a tenant API key, tnt_<prefix>_<secret>"
            " (the admin token is for /v1/admin only)."
        )
    _, prefix, secret = parts
    hashed = hash_secret(secret)
    if not bind:
        row = session.execute(_LOOKUP, {"prefix": prefix}).first()
    else:
        with binding.opening_statement_binds(session):
            row = session.execute(_LOOKUP_AND_BIND, {"prefix": prefix}).first()
    # Compare against a dummy hash when the prefix is unknown, so timing does not tell
    # an attacker which prefixes exist.
    expected = row.secret_hash if row else hash_secret(prefix)
    good = hmac.compare_digest(expected, hashed) and row is not None
    live = row is not None and row.revoked_at is None and row.status == "active"
    tenant = TenantBinding.for_slug(row.tenant_id, row.slug, row.db_role) if good and row is not None else None
    if bind:
        reported = row[_REPORTED_PATH] if row is not None else None
        if tenant is not None and live:
            binding.adopt(session, tenant, reported)
        else:  # deny: as the statement reported (dead key), or set now (no row, wrong secret)
            binding.adopt(session, None, None if live else reported)
    if tenant is None or row is None:
        raise InvalidApiKey("Unknown API key.")
    if row.revoked_at is not None:
        raise InvalidApiKey("This API key has been revoked.")
    if row.status == "pending":
        raise TenantPending(tenant.slug)
    if row.status != "active":
        raise TenantSuspended(tenant.slug)
    key = AuthenticatedKey(id=row.id, role=row.role, last_used_at=row.last_used_at, tenant=tenant,
                           rate_limit_per_minute=row.rate_limit_per_minute,
                           max_api_requests_per_month=row.max_api_requests_per_month)
    if touch:
        touch_last_used(session, key)
    return key


def needs_touch(key: ApiKey | AuthenticatedKey) -> bool:
    """Whether :func:`touch_last_used` would write: ``last_used_at`` is unset or older than the resolution."""
    return key.last_used_at is None or datetime.now(UTC) - key.last_used_at > LAST_USED_RESOLUTION


def touch_last_used(session: Session, key: ApiKey | AuthenticatedKey) -> None:
    """Refresh ``key.last_used_at`` when it is older than :data:`LAST_USED_RESOLUTION`.

    So a key's ``last_used_at`` lags its real last use by at most that much, and a busy
    key costs one UPDATE a minute, not one a request. The UPDATE row-locks the key
    until the transaction ends: callers that do more than read should touch last
    (the HTTP layer does it just before COMMIT), or a request holding its own key's
    row lock while it waits for another (see :func:`revoke_api_key`) could deadlock
    with one doing the same the other way round.
    """
    if not needs_touch(key):
        return
    session.execute(
        update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=datetime.now(UTC)),
        execution_options={"synchronize_session": False},
    )
