"""Members of the bound tenant: list, invite, change role or status, remove; accept an invitation.

Who may do what is decided here, from the acting credential
(:func:`app.tenancy.audit.current_actor`: its role, and its member id when a member acts):

- roles are ordered ``viewer < member < admin < owner``; an API key's role counts as the
  member role of the same name (a key is never an owner);
- managing members needs ``admin`` (the blueprint checks it); an admin manages members up
  to ``admin``: invite, promote, demote, disable, enable, remove them;
- only an owner grants or revokes ``owner`` (invites an owner, promotes to or demotes from
  owner, disables, enables or removes an owner). One exception, so that a tenant
  provisioned without an owner (or migrated from before members existed) can get one:
  while the tenant has no active owner, an admin may make one;
- the tenant always keeps at least one active owner, once it has one: a change that would
  leave none is 409 ``last-owner``. Every change takes the active owners' rows
  (``SELECT … FOR UPDATE`` in id order, then the target's row) before it decides, so two
  concurrent demotions of the last two owners queue, and the second sees the first.

Invitation tokens are ``tni_<secret>`` (256 random bits); only their SHA-256 is stored, as
for API keys. A token is good once and until ``expires_at``. Functions never commit; every
change adds its audit event to the same transaction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models.public import Tenant
from app.models.tenant import Invitation, Member
from app.pagination import Page, decode_cursor, make_page
from app.tenancy import audit
from app.tenancy.api_keys import hash_secret
from app.tenancy.binding import tenant_scope
from app.tenancy.context import TenantBinding
from app.tenancy.errors import InvalidEmail
from app.tenancy.members import RANK, normalise_email

from .errors import Conflict, InvitationExpired, InvitationUsed, LastOwner, NotAllowed, NotFound, check_id

INVITATION_PREFIX = "tni_"
#: What an audit event shows of a member.
AUDITED = ("email", "display_name", "role", "status", "subject")


@dataclass(frozen=True)
class InvitedMember:
    """A member just invited, and the invitation's token: shown this once, never stored."""

    member: Member
    invitation_token: str
    invitation_expires_at: datetime


def list_members(session: Session, *, limit: int = 50, cursor: str | None = None) -> Page[Member]:
    """One page in id order."""
    stmt = select(Member).order_by(Member.id).limit(limit + 1)
    after = decode_cursor(cursor, int)
    if after is not None:
        stmt = stmt.where(Member.id > after)
    return make_page(session.scalars(stmt).all(), limit, lambda m: m.id)


def list_for_operator(session: Session, tenant: Tenant, *, limit: int = 50, cursor: str | None = None) -> Page[Member]:
    """A tenant's members as the platform's operators see them (admin API, console, CLI).

    Read in the tenant's own schema: the request's transaction is bound to it for this
    one statement and then back to no tenant (the operator's requests have none), so
    the same rows and order as ``GET /v1/members``. Read-only: an operator changes no
    member (the tenant's owners decide who is in; an operator suspends the tenant).
    """
    with tenant_scope(TenantBinding.for_slug(tenant.id, tenant.slug, tenant.db_role), session):
        return list_members(session, limit=limit, cursor=cursor)


def get_member(session: Session, member_id: int) -> Member:
    check_id("member", member_id)
    member = session.get(Member, member_id)
    if member is None:
        raise NotFound("member", member_id)
    return member


def invite_member(
    session: Session, *, email: str, role: str, display_name: str | None = None, ttl: timedelta
) -> InvitedMember:
    """Create an invited member and its one-time token, valid for ``ttl``.

    :raise InvalidEmail: not an address. :raise NotAllowed: an owner invited by a non-owner.
    :raise Conflict: a member with this email exists already.
    """
    email = normalise_email(email)
    if role == "owner":
        _require_owner_power(session, "invite an owner")
    _require_rank("admin")
    actor = audit.current_actor()
    created = session.scalars(
        insert(Member)
        .values(email=email, role=role, status="invited", display_name=display_name, invited_by=actor.label)
        .on_conflict_do_nothing(index_elements=[Member.email])
        .returning(Member)
    ).one_or_none()
    if created is None:
        raise Conflict(f"A member with email {email!r} exists already.", "email")
    token, expires_at = _new_invitation(session, created.id, ttl)
    audit.record(session, "member.invited", "member", created.id, after=audit.snapshot(created, AUDITED))
    return InvitedMember(member=created, invitation_token=token, invitation_expires_at=expires_at)


def reinvite_member(session: Session, member_id: int, *, ttl: timedelta) -> InvitedMember:
    """A new invitation token for a member who has not accepted yet; earlier unaccepted tokens stop working.

    :raise NotFound, NotAllowed (an owner re-invited by a non-owner); Conflict: the member is not invited.
    """
    owners, member = _lock(session, member_id)
    if member.role == "owner":
        _require_owner_power(session, "invite an owner", owners)
    if member.status != "invited":
        raise Conflict(f"This member is {member.status}: only an invited member gets a new invitation.", "status")
    session.execute(delete(Invitation).where(Invitation.member_id == member.id, Invitation.accepted_at.is_(None)),
                    execution_options={"synchronize_session": False})
    token, expires_at = _new_invitation(session, member.id, ttl)
    audit.record(session, "member.reinvited", "member", member.id)
    return InvitedMember(member=member, invitation_token=token, invitation_expires_at=expires_at)


def update_member(session: Session, member_id: int, changes: dict[str, Any]) -> Member:
    """Change ``role`` and/or ``status`` (``active``: enable, ``disabled``: disable) and/or ``display_name``.

    :raise NotFound, NotAllowed, LastOwner; Conflict: enabling a member who never accepted.
    """
    unknown = set(changes) - {"role", "status", "display_name"}
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    owners, member = _lock(session, member_id)
    role, status = changes.get("role", member.role), changes.get("status", member.status)
    if "owner" in (member.role, role) and (role, status) != (member.role, member.status):
        _require_owner_power(session, "grant or revoke the owner role", owners)
    if status == "active" and member.status == "invited":
        raise Conflict("An invited member becomes active by accepting the invitation.", "status")
    if status == "invited" and member.status != "invited":
        raise Conflict("A member cannot go back to invited.", "status")
    if _is_active_owner(member) and (role, status) != ("owner", "active") and owners == [member.id]:
        raise LastOwner(member.id)
    before = audit.snapshot(member, AUDITED)
    for field, value in changes.items():
        setattr(member, field, value)
    audit.record(session, _action(before, changes), "member", member.id,
                 before=before, after=audit.snapshot(member, AUDITED))
    session.flush()
    session.refresh(member, ["updated_at"])
    return member


def remove_member(session: Session, member_id: int) -> None:
    """Delete a member (and their invitations). :raise NotFound, NotAllowed, LastOwner."""
    owners, member = _lock(session, member_id)
    if member.role == "owner":
        _require_owner_power(session, "remove an owner", owners)
    if owners == [member.id]:
        raise LastOwner(member.id)
    before = audit.snapshot(member, AUDITED)
    session.execute(delete(Member).where(Member.id == member.id), execution_options={"synchronize_session": False})
    session.expunge(member)
    audit.record(session, "member.removed", "member", member_id, before=before)


def accept_invitation(
    session: Session, *, token: str, subject: str | None = None, email: str | None = None
) -> Member:
    """Make the invited member active, linked to the accepting identity (``subject``: the IdP's ``sub``).

    ``email``, when given, must be the invited address (after normalisation).

    :raise NotFound: no invitation has this token (or its member was removed).
    :raise InvitationUsed: accepted before. :raise InvitationExpired: past ``expires_at``.
    :raise Conflict: ``email`` is not the invited one; ``subject`` is another member's;
        the member is no longer invited (disabled meanwhile).
    """
    invitation = None
    if token.startswith(INVITATION_PREFIX):
        invitation = session.scalars(
            select(Invitation).where(Invitation.token_hash == hash_secret(token[len(INVITATION_PREFIX):]))
            .with_for_update()
        ).one_or_none()
    if invitation is None:
        raise NotFound("invitation", "with this token")
    if invitation.accepted_at is not None:
        raise InvitationUsed("This invitation was accepted already; a token is good once.")
    if invitation.expires_at <= datetime.now(UTC):
        raise InvitationExpired(f"This invitation expired at {invitation.expires_at.isoformat()}; invite again.")
    member = session.scalars(
        select(Member).where(Member.id == invitation.member_id).with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if member.status != "invited":
        raise Conflict(f"This member is {member.status}, not invited.", "token")
    if email is not None and normalise_email(email) != member.email:
        raise Conflict("This invitation is for another email address.", "email")
    if subject is not None and session.scalar(
            select(Member.id).where(Member.subject == subject, Member.id != member.id)) is not None:
        raise Conflict("Another member is linked to this subject.", "subject")
    before = audit.snapshot(member, AUDITED)
    member.status = "active"
    if subject is not None:
        member.subject = subject
    invitation.accepted_at = datetime.now(UTC)
    audit.record(session, "member.joined", "member", member.id, before=before, after=audit.snapshot(member, AUDITED))
    session.flush()
    session.refresh(member, ["updated_at"])
    return member


def same_identity(field: str, sent: str, own: str | None) -> bool:
    """Whether ``sent`` (a body's ``subject`` or ``email``) names the same as a JWT's ``own`` value.

    Emails are compared normalised; an email the token does not verify matches nothing.
    """
    if own is None:
        return False
    if field == "email":
        try:
            return normalise_email(sent) == normalise_email(own)
        except InvalidEmail:
            return False
    return sent == own


def _new_invitation(session: Session, member_id: int, ttl: timedelta) -> tuple[str, datetime]:
    secret = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + ttl
    session.add(Invitation(member_id=member_id, token_hash=hash_secret(secret), expires_at=expires_at))
    return INVITATION_PREFIX + secret, expires_at


def _lock(session: Session, member_id: int) -> tuple[list[int], Member]:
    """The active owners' ids, locked in id order, then the target, locked and re-read.

    Every change locks in this order (owners first), so two changes queue rather than
    deadlock; the re-read sees what a change committed meanwhile did to the target.
    """
    check_id("member", member_id)
    owners = list(session.scalars(
        select(Member.id).where(Member.role == "owner", Member.status == "active").order_by(Member.id)
        .with_for_update()
    ).all())
    member = session.scalars(
        select(Member).where(Member.id == member_id).with_for_update().execution_options(populate_existing=True)
    ).one_or_none()
    if member is None:
        raise NotFound("member", member_id)
    return owners, member


def _require_rank(needed: str) -> None:
    role = audit.current_actor().role
    if role is None or RANK.get(role, -1) < RANK[needed]:
        raise NotAllowed(f"This needs role {needed!r} or above; the caller has {role!r}.")


def _require_owner_power(session: Session, what: str, owners: list[int] | None = None) -> None:
    """An owner may; an admin may too while the tenant has no active owner (bootstrap)."""
    role = audit.current_actor().role
    if role == "owner":
        return
    if role == "admin":
        if owners is None:
            owners = list(session.scalars(
                select(Member.id).where(Member.role == "owner", Member.status == "active")
            ).all())
        if not owners:
            return
    raise NotAllowed(f"Only an owner may {what}; the caller has role {role!r}.")


def _is_active_owner(member: Member) -> bool:
    return member.role == "owner" and member.status == "active"


def _action(before: dict[str, Any], changes: dict[str, Any]) -> str:
    if changes.get("status", before["status"]) != before["status"]:
        return "member.enabled" if changes["status"] == "active" else "member.disabled"
    if changes.get("role", before["role"]) != before["role"]:
        return "member.role_changed"
    return "member.updated"
