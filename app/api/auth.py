"""Who is calling: the admin bearer token, or a tenant credential that binds its tenant.

A tenant credential is an API key (``tnt_<prefix>_<secret>``) or, when
``JWT_SECRET``/``JWT_PUBLIC_KEY`` is configured, a JWT (three dot-separated segments)
whose ``tenant`` and ``role`` claims stand for a key's tenant and role
(:mod:`app.tenancy.jwt_tokens`). The two are told apart by shape, and get the same
binding, role checks, rate limit and audit actor (``api-key:<id>`` or ``jwt:<sub>``).
Tenant hints (Host, ``X-Tenant``) are checked against the authenticated tenant, never
used to pick one (:mod:`app.api.hints`).

The tenant binding (and the audit actor) made here are undone in ``teardown_request``,
so no request can leave a tenant bound to the thread or task that served it.

A key's ``last_used_at`` is refreshed at the end of a successful request, just before
its COMMIT, not when the key is checked: that UPDATE row-locks the key, and held from
the start it could deadlock two admins revoking each other's keys
(:func:`app.tenancy.api_keys.revoke_api_key` locks the tenant's admin keys).

Roles of tenant credentials are ordered: ``viewer`` reads, ``member`` also writes tenant
data, ``admin`` also manages keys, members and reads the audit trail, ``owner`` (members
only) also grants and revokes ``owner``. Each tenant blueprint says which role its reads
and its writes need (:func:`tenant_key_required`).

With ``JWT_ROLE_SOURCE=member`` a JWT signs in as the active member its ``sub`` (or
verified email) names, read in the tenant's schema on every request, no cache
(:func:`app.tenancy.members.authenticate`): its role is the member's, its audit actor
``member:<id>``, and a disabled or removed member is refused from the next request on,
in every process.
"""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Callable

from flask import Response, after_this_request, current_app, g, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import Forbidden, Unauthorized

from app.api.errors import handle_exception
from app.api.hints import check_hints
from app.api.metering import count_request
from app.api.ratelimit import check_tenant_rate
from app.extensions import db
from app.models.public import API_KEY_ROLES
from app.tenancy import api_keys, audit, jwt_tokens, members
from app.tenancy.binding import apply_binding, platform_access
from app.tenancy.context import TenantBinding, bind, unbind


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized("Missing Authorization header; send 'Authorization: Bearer <token>'.")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Malformed Authorization header; expected 'Bearer <token>'.")
    return token.strip()


def require_admin() -> None:
    """``before_request`` of the admin API: the ADMIN_TOKEN, compared in constant time."""
    token = bearer_token()
    expected = current_app.config.get("ADMIN_TOKEN")
    if not expected:
        raise Unauthorized("The admin API is disabled: ADMIN_TOKEN is not configured.")
    if hmac.compare_digest(token.encode(), expected.encode()):
        g.audit_token = audit.bind_actor(audit.Actor(label="admin-api", request_id=request_id()))
        return
    if api_keys.looks_like_api_key(token):
        raise Forbidden("Tenant API keys cannot use the admin API.")
    if jwt_tokens.looks_like_jwt(token):
        raise Forbidden("Tenant JWTs cannot use the admin API.")
    raise Unauthorized("Invalid admin token.")


def require_tenant_key(invitees: bool = False) -> None:
    """``before_request`` of the tenant API: authenticate the key or JWT, bind its tenant.

    The credential's tenant lookup opens the request's transaction; for an API key the
    same statement binds the key's tenant (search_path, application_name, role) when the
    key is good, so identity and binding cost one round trip. The tenant hints are
    checked next (404 on a mismatch, before anything is counted; the transaction goes
    back to the deny path); binding the context then finds the transaction already bound
    (a JWT's tenant is bound here, one statement more). Then the request is counted
    against the tenant's rate limit (429 when its plan's budget is spent), and metered
    against its monthly allowance (429 ``quota-exceeded`` when used up; :mod:`app.api.metering`).

    ``invitees``: a good JWT of the tenant that names no active member yet is let through
    as a viewer instead of 401, for accepting an invitation as the person it names (its
    identity is then ``g.jwt_claims``); every other route refuses it.
    """
    token = bearer_token()
    key: api_keys.AuthenticatedKey | None = None
    claims: jwt_tokens.JwtClaims | None = None
    if not api_keys.looks_like_api_key(token) and jwt_tokens.looks_like_jwt(token):
        claims, tenant = jwt_tokens.authenticate(db.session(), token, _jwt_verifier())
        role = claims.role or "viewer"  # a member's: read below, once the tenant is bound
        actor = audit.Actor(label=f"jwt:{claims.subject}", role=role, request_id=request_id())
        binding = TenantBinding.for_slug(tenant.id, tenant.slug, tenant.db_role)
        rate_limit = tenant.plan.rate_limit_per_minute
        monthly_limit = tenant.plan.max_api_requests_per_month
    else:
        # One round trip finds the key and binds its tenant's schema to the transaction.
        key = api_keys.authenticate(db.session(), token, touch=False, bind=True)
        role = key.role
        actor = audit.Actor(label=f"api-key:{key.id}", api_key_id=key.id, role=role, request_id=request_id())
        binding = key.tenant
        rate_limit = key.rate_limit_per_minute
        monthly_limit = key.max_api_requests_per_month
        _touch_at_the_end(key)
    try:
        check_hints(binding.slug)
    except Exception:
        apply_binding(db.session())  # the context has no tenant: the transaction follows it (deny)
        raise

    g.api_key = key  # None for a JWT
    g.jwt_claims = claims  # None for a key
    g.tenant_id = binding.tenant_id
    g.rate_limit_per_minute = rate_limit
    g.tenant_token = bind(binding)
    apply_binding(db.session())
    if claims is not None and claims.role is None:  # JWT_ROLE_SOURCE=member: the member record decides
        try:
            member = members.authenticate(db.session(), claims.subject, claims.verified_email)
        except members.MemberRefused:
            if not invitees:
                raise
            role = "viewer"  # a person not (yet) a member: the actor stays jwt:<sub>
        else:
            role = member.role
            actor = audit.Actor(label=f"member:{member.id}", role=role, request_id=request_id(),
                                member_id=member.id)
            _touch_member_at_the_end(member)
    g.role = role
    g.audit_token = audit.bind_actor(actor)
    check_tenant_rate()
    count_request(binding.tenant_id, monthly_limit)


def _touch_at_the_end(key: api_keys.AuthenticatedKey) -> None:
    """Refresh ``last_used_at`` of a successful request's key just before its COMMIT (see above)."""

    @after_this_request
    def touch_key(response: Response) -> Response:  # runs before the unit of work commits
        if response.status_code >= 400 or not api_keys.needs_touch(key):
            return response  # rolled back anyway, or touched less than a minute ago
        try:
            with platform_access(db.session()):
                api_keys.touch_last_used(db.session(), key)
        except SQLAlchemyError as exc:  # the transaction is aborted: its COMMIT would not commit
            db.session.rollback()
            return handle_exception(exc)
        return response


def _touch_member_at_the_end(member: members.AuthenticatedMember) -> None:
    """Refresh a member's ``last_seen_at`` (at most once a minute) just before a successful request's COMMIT."""

    @after_this_request
    def touch_member(response: Response) -> Response:
        if response.status_code >= 400 or not members.needs_touch(member):
            return response
        try:
            members.touch_last_seen(db.session(), member)
        except SQLAlchemyError as exc:
            db.session.rollback()
            return handle_exception(exc)
        return response


#: Where each app keeps its JWT verifier (built from its settings on first use).
_JWT_EXTENSION = "tenantry_jwt_verifier"


def _jwt_verifier() -> jwt_tokens.JwtVerifier:
    verifier = current_app.extensions.get(_JWT_EXTENSION)
    if verifier is None:
        verifier = current_app.extensions[_JWT_EXTENSION] = jwt_tokens.JwtVerifier.from_config(current_app.config)
    return verifier


def tenant_key_required(read: str = "viewer", write: str = "member", invitees: bool = False) -> Callable[[], None]:
    """A ``before_request`` that authenticates a tenant key or JWT and checks its role.

    Safe methods (GET, HEAD, OPTIONS) need ``read``, the others ``write``. A key (or a
    JWT's ``role`` claim) below that gets 403 before any tenant data is touched.
    """
    for role in (read, write):
        if role not in API_KEY_ROLES:
            raise ValueError(f"unknown role {role!r}")

    def check() -> None:
        require_tenant_key(invitees)
        needed = read if request.method in {"GET", "HEAD", "OPTIONS"} else write
        if _RANK[g.role] < _RANK[needed]:
            what = "API key" if g.api_key is not None else "token"
            raise Forbidden(f"This {what} has role {g.role!r}; this needs {needed!r} or above.")

    return check


_RANK = members.RANK  # viewer < member < admin < owner (a member's role; keys stop at admin)

#: What a client may send as X-Request-ID (anything else is replaced, not echoed).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id() -> str:
    """This request's id: the client's X-Request-ID when it is sane, else a new one."""
    rid = g.get("request_id")
    if rid is None:
        sent = request.headers.get("X-Request-ID", "")
        rid = g.request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
    return rid


def release_tenant(exc: BaseException | None = None) -> None:
    """``teardown_request``: unbind whatever this request bound."""
    token = g.pop("tenant_token", None)
    if token is not None:
        unbind(token)
    actor = g.pop("audit_token", None)
    if actor is not None:
        audit.unbind_actor(actor)
