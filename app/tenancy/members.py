"""The people of a tenant: email normalisation, the first owner, and members signing in with a JWT.

Managing members (invite, change, remove, accept an invitation) is tenant data and lives
in :mod:`app.services.members`; what provisioning and authentication need of members is
here, in the core, because both sit below the services.

**Email addresses** are stored normalised (:func:`normalise_email`), and every lookup
normalises first, so ``Ann@Example.COM `` and ``ann@example.com`` are one member:

- surrounding whitespace is dropped;
- Unicode is put in NFC, so an address typed with a precomposed ``é`` and one with ``e``
  plus a combining accent (what some keyboards and IdPs send) are the same string;
- then ``str.lower()``. Not ``casefold()``: it also maps ``ß`` to ``ss`` and would merge
  mailboxes that are distinct. Lowercasing the local part is, strictly, RFC 5321's
  business of the receiving server; every provider in practice treats it as
  case-insensitive, and two members differing only by case are a mistake, not two people;
- internationalised addresses (RFC 6531: Unicode in the local part and the domain) are
  accepted as they are, because identity providers put them in the ``email`` claim that
  way. An IDN domain is not converted to its ``xn--`` form: ``bücher.example`` and
  ``xn--bcher-kva.example`` are two addresses here (documented in docs/members.md).

**A member signs in** with a JWT of the deployment's identity provider
(:mod:`app.tenancy.jwt_tokens`, ``JWT_ROLE_SOURCE=member``): the token's ``sub``, or its
``email`` when ``email_verified`` is true, must match an *active* member of the token's
tenant, and the member's role is the member record's, never a claim. The row is read on
every request (by its unique index: one indexed lookup in the request's transaction), with
no cache, so disabling or removing a member refuses their next request in every process.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, or_, select, text, update
from sqlalchemy.orm import Session

from app.models.tenant import MEMBER_ROLES, Member

from . import audit
from .errors import InvalidApiKey, InvalidEmail
from .naming import quote_ident

#: RFC 5321's longest forward path, less the angle brackets.
EMAIL_MAX = 254
LOCAL_MAX = 64
#: ``last_seen_at`` is refreshed at most this often (as a key's ``last_used_at``).
LAST_SEEN_RESOLUTION = timedelta(seconds=60)
#: Roles in order, each including the one before.
RANK = {role: rank for rank, role in enumerate(MEMBER_ROLES)}

#: RFC 5322's atom characters (ASCII) besides letters and digits; Unicode letters and
#: digits are allowed too (RFC 6531). No quoted local parts, no comments, no IP literals.
_LOCAL_EXTRA = set("!#$%&'*+-/=?^_`{|}~.")
#: A domain label: letters and digits (any script), inner hyphens; no underscore, 1 to 63 characters.
_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?")


def normalise_email(value: object, field: str = "email") -> str:
    """``value`` as stored: trimmed, NFC, lowercase; :class:`InvalidEmail` (naming ``field``) if it is no address."""
    if not isinstance(value, str):
        raise InvalidEmail(field, "Not a valid email address.")
    email = unicodedata.normalize("NFC", value.strip()).lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise InvalidEmail(field, "Not a valid email address: it needs a local part, '@' and a domain.")
    if len(email) > EMAIL_MAX or len(local) > LOCAL_MAX:
        raise InvalidEmail(field, f"Too long: at most {EMAIL_MAX} characters, {LOCAL_MAX} before the '@'.")
    if not all(ch.isalnum() or ch in _LOCAL_EXTRA for ch in local) or local.startswith(".") \
            or local.endswith(".") or ".." in local:
        raise InvalidEmail(field, "Not a valid email address: the part before '@' has a character it cannot hold.")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidEmail(field, "Not a valid email address: the domain is not a host name with a dot.")
    return email


@dataclass(frozen=True, slots=True)
class AuthenticatedMember:
    """The member a JWT signed in as: what a request needs of them."""

    id: int
    role: str
    last_seen_at: datetime | None


class MemberRefused(InvalidApiKey):
    """A valid JWT that names no active member of its tenant (401)."""


_BY_IDENTITY = select(
    Member.id, Member.role, Member.status, Member.subject, Member.email, Member.last_seen_at
).where(or_(Member.subject == bindparam("subject"), Member.email == bindparam("email")))


def authenticate(session: Session, subject: str, verified_email: str | None) -> AuthenticatedMember:
    """The active member of the bound tenant with this ``sub`` (else this verified email), or raise.

    A member already linked to another subject is not matched by email: the email would
    then name a different person at the identity provider.

    :raise MemberRefused: no such member, or not active (invited, disabled).
    """
    email = None
    if verified_email is not None:
        try:
            email = normalise_email(verified_email)
        except InvalidEmail:
            email = None
    rows = session.execute(_BY_IDENTITY, {"subject": subject, "email": email}).all()
    row = next((r for r in rows if r.subject == subject), None)
    if row is None and email is not None:
        row = next((r for r in rows if r.email == email and r.subject is None), None)
    if row is None:
        raise MemberRefused("The token names no member of this tenant.")
    if row.status != "active":
        raise MemberRefused(f"This member is {row.status}, not active.")
    return AuthenticatedMember(id=row.id, role=row.role, last_seen_at=row.last_seen_at)


def needs_touch(member: AuthenticatedMember) -> bool:
    return member.last_seen_at is None or datetime.now(UTC) - member.last_seen_at > LAST_SEEN_RESOLUTION


def touch_last_seen(session: Session, member: AuthenticatedMember) -> None:
    """Refresh ``last_seen_at`` (at most once a minute per member; callers touch last, before COMMIT)."""
    if needs_touch(member):
        session.execute(
            update(Member).where(Member.id == member.id).values(last_seen_at=datetime.now(UTC)),
            execution_options={"synchronize_session": False},
        )


@dataclass(frozen=True)
class OwnerRecord:
    """The first owner, as provisioning created it."""

    id: int
    email: str
    role: str
    status: str
    created_at: datetime


def create_first_owner(session: Session, schema_name: str, email: str, *, role: str | None = None) -> OwnerRecord:
    """Insert an active owner (and its tenant audit event) into the new schema ``schema_name``.

    For provisioning, whose transaction is bound to its caller (usually the deny path)
    and not to the new tenant: the tables are named with their schema. One statement,
    taken as the tenant's database ``role`` when it has one (the login user may take that
    role but not inherit its rights), then back to the login user. ``email`` is normalised already.
    """
    schema = quote_ident(schema_name)
    actor = audit.current_actor()
    if role is not None:
        session.execute(text("SELECT set_config('role', :role, true)"), {"role": role})
    row = session.execute(text(
        f"WITH new_member AS ("
        f" INSERT INTO {schema}.members (email, role, status, invited_by)"
        f" VALUES (:email, 'owner', 'active', :actor) RETURNING id, email, role, status, created_at),"
        f" new_event AS ("
        f" INSERT INTO {schema}.audit_events (action, resource, resource_id, actor, request_id, changes)"
        f" SELECT 'member.created', 'member', id::text, :actor, :request_id, CAST(:changes AS jsonb)"
        f" FROM new_member)"
        f" SELECT id, email, role, status, created_at FROM new_member"
    ), {"email": email, "actor": actor.label, "request_id": actor.request_id,
        "changes": json.dumps(audit.changes(None, {"email": email, "role": "owner", "status": "active"}))}).one()
    if role is not None:
        session.execute(text("SELECT set_config('role', 'none', true)"))
    return OwnerRecord(**row._mapping)
