"""GitHub App installations as tenants: apply one verified webhook delivery, and record it.

The HTTP layer verifies the signature and parses the body; everything after that is
here, so the CLI (``flask github deliveries replay``) applies a stored delivery exactly
as a request does. :func:`receive` owns its transactions:

1. **Claim the delivery id.** ``INSERT … ON CONFLICT (delivery_id) DO NOTHING`` into
   ``public.github_deliveries`` is the transaction's first write. A redelivery finds the
   row and is answered from it (nothing else is read or written); a redelivery racing
   the first attempt waits on the unique index until that commits, then finds it. Only
   a delivery recorded ``failed`` is applied again (a replay).
2. **Queue per installation, then per tenant.** The installation's advisory lock
   (:func:`app.tenancy.locks.lock_installation`), then the tenant's (the one
   provisioning, migrations and deletion take), always in that order: an
   ``installation.created`` and the events racing it apply one after the other.
3. **Apply, in the same transaction**, and write the outcome into the claimed row.
   Any error rolls all of it back; the delivery is then recorded ``failed`` (with the
   error and its payload) in a transaction of its own, and :class:`DeliveryFailed` raised.

Outcomes: ``applied`` (something changed), ``duplicate`` (the change was in place
already: an installation created twice under two delivery ids, a repository added
twice), ``ignored`` (an event or action nothing here handles, or an installation not
linked to a tenant, whose payload is kept so it is not lost), ``failed``.

Every change is made as actor ``github:<delivery id>``: the platform audit trail carries
it as the actor, tenant audit events (which have no actor column yet) as their request id.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models.public import GithubDelivery, Tenant, TenantInstallation
from app.models.tenant import Repository
from app.tenancy import audit, lifecycle, locks
from app.tenancy.binding import tenant_scope
from app.tenancy.context import TenantBinding
from app.tenancy.errors import InvalidSlug, TenantAlreadyExists
from app.tenancy.naming import MAX_SLUG_LENGTH, validate_slug
from app.tenancy.provisioning import provision_in_transaction

from .repositories import add_github_repository, change_repository

log = logging.getLogger(__name__)

#: Collisions tried before giving up on a login's slug (``acme``, ``acme_2`` … ``acme_50``).
MAX_SLUG_SUFFIX = 50


class MalformedPayload(ValueError):
    """A verified delivery lacks a field its event must carry (recorded as ``failed``)."""


class DeliveryFailed(Exception):
    """Applying the delivery raised; it was rolled back and is recorded ``failed`` (replayable)."""

    def __init__(self, delivery_id: str, cause: BaseException) -> None:
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        super().__init__(f"delivery {delivery_id} failed and is recorded as failed: {first_line}")
        self.delivery_id = delivery_id
        self.cause = cause


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery as GitHub sent it: its id, event, raw body and the body parsed."""

    delivery_id: str
    event: str
    body: str
    payload: Mapping[str, Any]

    @property
    def action(self) -> str | None:
        action = self.payload.get("action")
        return action if isinstance(action, str) else None

    @property
    def installation_id(self) -> int | None:
        installation = self.payload.get("installation")
        value = installation.get("id") if isinstance(installation, Mapping) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Settings:
    """What applying a delivery needs of the configuration."""

    default_plan: str = "free"
    migrations_location: str | None = None
    tenant_role: bool = False


@dataclass(frozen=True)
class DeliveryResult:
    """What came of a delivery. ``redelivery``: answered from the record of an earlier attempt."""

    delivery_id: str
    outcome: str
    redelivery: bool = False
    tenant: str | None = None
    detail: str | None = None


@dataclass
class _Outcome:
    outcome: str
    tenant: Tenant | None = None
    detail: str | None = None
    keep_payload: bool = False


@dataclass
class _Work:
    session: Session
    delivery: Delivery
    settings: Settings
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


# --- receiving ----------------------------------------------------------------------


def receive(session: Session, delivery: Delivery, settings: Settings, *, replay: bool = False) -> DeliveryResult:
    """Owns its transactions: apply ``delivery`` once, record the outcome, commit.

    The session must have no transaction open. A delivery id seen before is answered
    from its record, unless that record is ``failed`` (applied again). ``replay``: also
    apply again a recorded delivery whose payload was kept (an installation that was not
    linked yet), as ``flask github deliveries replay`` does.

    :raise DeliveryFailed: applying it raised; nothing of it was kept, and the delivery
        is recorded ``failed`` with the error and its payload.
    """
    if session.in_transaction():
        raise RuntimeError("receive() needs a session with no open transaction")
    actor = audit.Actor(label=f"github:{delivery.delivery_id}", request_id=f"github:{delivery.delivery_id}")
    try:
        with audit.acting_as(actor), session.begin():
            result = _receive_in_transaction(session, delivery, settings, replay)
    except Exception as exc:
        session.rollback()
        _record_failure(session, delivery, exc)
        raise DeliveryFailed(delivery.delivery_id, exc) from exc
    log.info("github.delivery: %s %s -> %s", delivery.event, delivery.action, result.outcome,
             extra={"event": "github.delivery", "tenant": result.tenant})
    return result


def _receive_in_transaction(
    session: Session, delivery: Delivery, settings: Settings, replay: bool
) -> DeliveryResult:
    record, fresh = _claim(session, delivery)
    again = record.outcome == "failed" or (replay and record.payload is not None)
    if not fresh and not again:
        return DeliveryResult(delivery.delivery_id, record.outcome, redelivery=True,
                              tenant=_slug_of(session, record.tenant_id),
                              detail=record.error or f"received at {record.received_at.isoformat()}; not applied again")
    handler = HANDLERS.get((delivery.event, delivery.action or ""))
    installation_id = delivery.installation_id
    if handler is None:
        done = _Outcome("ignored", detail=f"{delivery.event}.{delivery.action} is not handled")
    elif installation_id is None:
        done = _Outcome("ignored", detail="the payload names no installation")
    else:
        locks.lock_installation(session.connection(), installation_id)
        done = handler(_Work(session, delivery, settings))
    record.outcome = done.outcome
    record.tenant_id = done.tenant.id if done.tenant is not None else None
    record.error = None if done.outcome == "applied" else done.detail  # why it was not applied
    record.payload = delivery.body if done.keep_payload else None
    session.flush()
    return DeliveryResult(delivery.delivery_id, done.outcome,
                          tenant=done.tenant.slug if done.tenant is not None else None, detail=done.detail)


def _claim(session: Session, delivery: Delivery) -> tuple[GithubDelivery, bool]:
    """The delivery's row, locked for this transaction, and whether this transaction inserted it.

    A new row is inserted ``ignored`` and given its real outcome before the commit; a
    concurrent attempt of the same delivery waits on the unique index until then, and
    a concurrent replay of a failed one on the row lock.
    """
    inserted = session.execute(
        insert(GithubDelivery)
        .values(delivery_id=delivery.delivery_id, event=delivery.event[:60], action=_short(delivery.action),
                installation_id=delivery.installation_id, outcome="ignored")
        .on_conflict_do_nothing(index_elements=[GithubDelivery.delivery_id])
        .returning(GithubDelivery.id)
    ).scalar_one_or_none()
    record = session.scalars(
        select(GithubDelivery).where(GithubDelivery.delivery_id == delivery.delivery_id).with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    return record, inserted is not None


def _short(action: str | None) -> str | None:
    return action[:60] if action else None


def _record_failure(session: Session, delivery: Delivery, exc: BaseException) -> None:
    """Record ``delivery`` as failed (its error and payload), in a transaction of its own."""
    error = f"{type(exc).__name__}: {exc}"[:4000]
    try:
        with session.begin():
            session.execute(
                insert(GithubDelivery)
                .values(delivery_id=delivery.delivery_id, event=delivery.event[:60], action=_short(delivery.action),
                        installation_id=delivery.installation_id, outcome="failed", error=error,
                        payload=delivery.body)
                .on_conflict_do_update(index_elements=[GithubDelivery.delivery_id],
                                       set_={"outcome": "failed", "error": error, "payload": delivery.body},
                                       where=GithubDelivery.outcome == "failed")
            )
    except Exception:  # the database is gone too: the caller reports the first error
        session.rollback()
        log.exception("github.delivery_failed: could not record delivery %s as failed", delivery.delivery_id)
        return
    log.warning("github.delivery_failed: %s %s: %s", delivery.event, delivery.action, error,
                extra={"event": "github.delivery_failed"})


def _slug_of(session: Session, tenant_id: int | None) -> str | None:
    if tenant_id is None:
        return None
    return session.scalar(select(Tenant.slug).where(Tenant.id == tenant_id))


# --- slugs from logins --------------------------------------------------------------

_NOT_SLUG = re.compile(r"[^a-z0-9_]")


def slug_candidate(login: str, n: int = 1) -> str:
    """The ``n``-th slug to try for GitHub account ``login`` (1: the login itself, then ``_2`` …).

    Lowercased; every character outside the slug rules (:mod:`app.tenancy.naming`)
    becomes ``_``; ``gh_`` in front when it does not start with a letter; cut so the
    suffix fits. ``Octo-Cat`` gives ``octo_cat``, then ``octo_cat_2``; ``42`` gives ``gh_42``.
    The result may still be reserved or invalid: :func:`free_slug` skips those.
    """
    base = _NOT_SLUG.sub("_", login.lower())
    if not base[:1].isalpha() or not base[:1].isascii():
        base = "gh_" + base
    suffix = "" if n == 1 else f"_{n}"
    return base[: MAX_SLUG_LENGTH - len(suffix)] + suffix


def free_slug(session: Session, login: str) -> str:
    """The first candidate slug for ``login`` that is valid, unreserved and not taken (a hint:
    provisioning checks again under the tenant's lock)."""
    candidates = []
    for n in range(1, MAX_SLUG_SUFFIX + 1):
        try:
            candidates.append(validate_slug(slug_candidate(login, n)))
        except InvalidSlug:
            continue
    taken = set(session.scalars(select(Tenant.slug).where(Tenant.slug.in_(candidates))))
    taken |= {name.removeprefix("t_") for name in session.scalars(
        text("SELECT nspname FROM pg_namespace WHERE nspname = ANY(:names)"),
        {"names": ["t_" + c for c in candidates]})}
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    raise TenantAlreadyExists(candidates[-1], f"no free slug for GitHub account {login!r}")


# --- the handlers -------------------------------------------------------------------


def _need(mapping: Any, *path: str) -> Any:
    """``mapping[path[0]][path[1]]…``, or :class:`MalformedPayload` naming the missing field."""
    value = mapping
    for i, key in enumerate(path):
        if not isinstance(value, Mapping) or key not in value:
            raise MalformedPayload(f"the payload has no {'.'.join(path[: i + 1])}")
        value = value[key]
    return value


def _linked(work: _Work) -> tuple[TenantInstallation, Tenant] | None:
    """The installation's link and its tenant, locked: the tenant's advisory lock first (the
    order deletion takes them in), then the link's row; None when no tenant is linked."""
    session = work.session
    found = session.execute(
        select(Tenant.id, Tenant.slug).join(TenantInstallation, TenantInstallation.tenant_id == Tenant.id)
        .where(TenantInstallation.installation_id == work.delivery.installation_id)
    ).first()
    if found is None:
        return None
    locks.lock_tenant(session.connection(), found.slug)
    link = session.get(TenantInstallation, found.id, with_for_update=True, populate_existing=True)
    if link is None:  # deleted while we waited for its lock
        return None
    return link, session.scalars(select(Tenant).where(Tenant.id == found.id)).one()


def _unknown(work: _Work) -> _Outcome:
    return _Outcome("ignored", keep_payload=True, detail=(
        f"installation {work.delivery.installation_id} is not linked to a tenant; the payload is kept "
        "(replay it once the installation is known; a sync reconciles it)"))


def _binding(tenant: Tenant) -> TenantBinding:
    return TenantBinding.for_slug(tenant.id, tenant.slug, tenant.db_role)


def installation_created(work: _Work) -> _Outcome:
    """Provision a ``pending`` tenant for the installation, its repositories loaded; or find it
    linked already (``duplicate``); or revive the account's uninstalled tenant (:func:`_revive`)."""
    installation = _need(work.delivery.payload, "installation")
    account = _need(installation, "account")
    login, account_type = str(_need(account, "login")), str(_need(account, "type"))
    existing = _linked(work)
    if existing is not None:
        return _Outcome("duplicate", tenant=existing[1], detail=f"already linked to tenant {existing[1].slug}")
    revived = _revive(work, installation, account)
    if revived is not None:
        return revived
    session = work.session
    for _ in range(MAX_SLUG_SUFFIX):
        slug = free_slug(session, login)
        try:
            provisioned = provision_in_transaction(
                session, slug=slug, name=login, plan=work.settings.default_plan,
                location=work.settings.migrations_location, tenant_role=work.settings.tenant_role,
                status="pending",
            )
            break
        except TenantAlreadyExists:  # taken since free_slug looked (an operator, another account)
            continue
    else:
        raise TenantAlreadyExists(login, f"no free slug for GitHub account {login!r}")
    session.add(TenantInstallation(
        tenant_id=provisioned.tenant.id, installation_id=_need(installation, "id"),
        account_id=_need(account, "id"), account_login=login, account_type=account_type,
    ))
    tenant = session.scalars(select(Tenant).where(Tenant.id == provisioned.tenant.id)).one()
    repositories = work.delivery.payload.get("repositories") or []
    with tenant_scope(_binding(tenant), session):
        for repository in repositories:
            _register(session, repository)
        session.flush()
    return _Outcome("applied", tenant=tenant,
                    detail=f"provisioned tenant {slug} (pending) with {len(repositories)} repositories")


def _revive(work: _Work, installation: Mapping[str, Any], account: Mapping[str, Any]) -> _Outcome | None:
    """A reinstallation by an account whose tenant was uninstalled (and not purged yet): that
    tenant, its slug, schema and data, takes the new installation, ``pending`` again (a new
    installation is a new agreement), its repositories reconciled with the payload's list."""
    session = work.session
    found = session.execute(
        select(Tenant.id, Tenant.slug).join(TenantInstallation, TenantInstallation.tenant_id == Tenant.id)
        .where(TenantInstallation.account_id == _need(account, "id"), TenantInstallation.uninstalled_at.is_not(None))
        .order_by(TenantInstallation.uninstalled_at.desc()).limit(1)
    ).first()
    if found is None:
        return None
    locks.lock_tenant(session.connection(), found.slug)
    link = session.get(TenantInstallation, found.id, with_for_update=True, populate_existing=True)
    if link is None or link.uninstalled_at is None:  # purged, or revived, while we waited
        return None
    login = str(_need(account, "login"))
    link.installation_id, link.account_login = _need(installation, "id"), login
    link.account_type = str(_need(account, "type"))
    link.installed_at, link.suspended_at, link.uninstalled_at = work.now, None, None
    tenant = session.scalars(select(Tenant).where(Tenant.id == found.id)).one()
    lifecycle.update_tenant(session, tenant.slug, status="pending", name=login)
    listed = work.delivery.payload.get("repositories") or []
    wanted = {_need(repository, "id") for repository in listed}
    with tenant_scope(_binding(tenant), session):
        changed = sum(_register(session, repository) for repository in listed)
        for row in session.scalars(select(Repository).where(Repository.enabled.is_(True))).all():
            if row.github_repo_id not in wanted:
                changed += _disable(session, {"id": row.github_repo_id})
        session.flush()
    return _Outcome("applied", tenant=tenant,
                    detail=f"revived uninstalled tenant {tenant.slug} (pending); {changed} repositories changed")


def installation_deleted(work: _Work) -> _Outcome:
    """Suspend the tenant and mark it uninstalled; its data is kept until ``flask tenants purge``."""
    linked = _linked(work)
    if linked is None:
        return _unknown(work)
    link, tenant = linked
    if link.uninstalled_at is not None:
        return _Outcome("duplicate", tenant=tenant, detail="already uninstalled")
    link.uninstalled_at = work.now
    if tenant.status != "suspended":
        lifecycle.update_tenant(work.session, tenant.slug, status="suspended")
    return _Outcome("applied", tenant=tenant, detail="suspended and marked uninstalled")


def installation_suspend(work: _Work) -> _Outcome:
    """Suspend an active tenant (a pending one stays pending: it serves nothing either way)."""
    linked = _linked(work)
    if linked is None:
        return _unknown(work)
    link, tenant = linked
    if link.suspended_at is not None:
        return _Outcome("duplicate", tenant=tenant, detail="already suspended")
    link.suspended_at = work.now
    if tenant.status == "active":
        lifecycle.update_tenant(work.session, tenant.slug, status="suspended")
    return _Outcome("applied", tenant=tenant, detail=f"installation suspended; tenant {tenant.status}")


def installation_unsuspend(work: _Work) -> _Outcome:
    """Resume the tenant GitHub suspended (unless it is uninstalled); a pending one stays pending."""
    linked = _linked(work)
    if linked is None:
        return _unknown(work)
    link, tenant = linked
    if link.suspended_at is None:
        return _Outcome("duplicate", tenant=tenant, detail="not suspended")
    link.suspended_at = None
    if tenant.status == "suspended" and link.uninstalled_at is None:
        lifecycle.update_tenant(work.session, tenant.slug, status="active")
    return _Outcome("applied", tenant=tenant, detail=f"installation unsuspended; tenant {tenant.status}")


def installation_target_renamed(work: _Work) -> _Outcome:
    """The account's new login becomes the link's and the tenant's display name; slug and schema stay."""
    linked = _linked(work)
    if linked is None:
        return _unknown(work)
    link, tenant = linked
    login = str(_need(work.delivery.payload, "account", "login"))
    if link.account_login == login and tenant.name == login:
        return _Outcome("duplicate", tenant=tenant, detail=f"already named {login}")
    link.account_login = login
    lifecycle.update_tenant(work.session, tenant.slug, name=login)
    return _Outcome("applied", tenant=tenant, detail=f"renamed to {login}")


def repositories_added(work: _Work) -> _Outcome:
    """Register each added repository, or enable it again: never twice."""
    return _on_repositories(work, _need(work.delivery.payload, "repositories_added"), _register)


def repositories_removed(work: _Work) -> _Outcome:
    """Disable each removed repository (kept: its history and references survive)."""
    return _on_repositories(work, _need(work.delivery.payload, "repositories_removed"), _disable)


def repository_changed(work: _Work) -> _Outcome:
    """``renamed`` / ``transferred``: the row takes the repository's new owner and name."""
    return _on_repositories(work, [_need(work.delivery.payload, "repository")], _follow)


def repository_deleted(work: _Work) -> _Outcome:
    """The repository is gone on GitHub: disable its row (kept, like a removed one)."""
    return _on_repositories(work, [_need(work.delivery.payload, "repository")], _disable)


def _on_repositories(
    work: _Work, repositories: Any, change: Callable[[Session, Mapping[str, Any]], bool]
) -> _Outcome:
    linked = _linked(work)
    if linked is None:
        return _unknown(work)
    _, tenant = linked
    if not isinstance(repositories, list):
        raise MalformedPayload("the payload's repositories are not a list")
    with tenant_scope(_binding(tenant), work.session):
        changed = sum(change(work.session, repository) for repository in repositories)
        work.session.flush()
    if not changed:
        return _Outcome("duplicate", tenant=tenant, detail="no repository changed")
    return _Outcome("applied", tenant=tenant, detail=f"{changed} of {len(repositories)} repositories changed")


def _owner_and_name(repository: Mapping[str, Any]) -> tuple[str, str]:
    """Owner and name: ``full_name`` is in every repository GitHub sends (``owner`` is not)."""
    owner, _, name = str(_need(repository, "full_name")).partition("/")
    return owner, str(repository.get("name") or name)


def _existing(session: Session, repository: Mapping[str, Any]) -> Repository | None:
    return session.scalars(
        select(Repository).where(Repository.github_repo_id == _need(repository, "id")).with_for_update()
    ).one_or_none()


def _register(session: Session, repository: Mapping[str, Any]) -> bool:
    """Insert the repository, or enable it again; whether anything changed."""
    owner, name = _owner_and_name(repository)
    row = _existing(session, repository)
    if row is None:
        add_github_repository(session, _need(repository, "id"), owner, name)
        return True
    if row.enabled:
        return False
    change_repository(session, row, "repository.enabled", enabled=True, owner=owner, name=name)
    return True


def _disable(session: Session, repository: Mapping[str, Any]) -> bool:
    row = _existing(session, repository)
    if row is None or not row.enabled:
        return False
    change_repository(session, row, "repository.disabled", enabled=False)
    return True


def _follow(session: Session, repository: Mapping[str, Any]) -> bool:
    row = _existing(session, repository)
    owner = str(_need(repository, "owner", "login"))
    name = str(_need(repository, "name"))
    if row is None or (row.owner, row.name) == (owner, name):
        return False
    change_repository(session, row, "repository.updated", owner=owner, name=name)
    return True


#: (event, action) -> what applies it. Anything else is recorded ``ignored``.
HANDLERS: dict[tuple[str, str], Callable[[_Work], _Outcome]] = {
    ("installation", "created"): installation_created,
    ("installation", "deleted"): installation_deleted,
    ("installation", "suspend"): installation_suspend,
    ("installation", "unsuspend"): installation_unsuspend,
    ("installation_target", "renamed"): installation_target_renamed,
    ("installation_repositories", "added"): repositories_added,
    ("installation_repositories", "removed"): repositories_removed,
    ("repository", "renamed"): repository_changed,
    ("repository", "transferred"): repository_changed,
    ("repository", "deleted"): repository_deleted,
}


def installation_of_tenant(session: Session, tenant_id: int) -> TenantInstallation | None:
    """The GitHub installation tenant ``tenant_id`` stands for, if any."""
    return session.get(TenantInstallation, tenant_id)


# --- stored deliveries --------------------------------------------------------------


def stored_delivery(session: Session, delivery_id: str) -> Delivery | None:
    """A recorded delivery as it was received, when its payload was kept (failed or not linked yet)."""
    record = session.scalars(select(GithubDelivery).where(GithubDelivery.delivery_id == delivery_id)).one_or_none()
    if record is None or record.payload is None:
        return None
    return Delivery(delivery_id=record.delivery_id, event=record.event, body=record.payload,
                    payload=json.loads(record.payload))


def replayable(session: Session, *, installation_id: int | None = None) -> list[str]:
    """Delivery ids whose payload is kept (failed, or for an installation not linked then), oldest first."""
    stmt = select(GithubDelivery.delivery_id).where(GithubDelivery.payload.is_not(None))
    if installation_id is not None:
        stmt = stmt.where(GithubDelivery.installation_id == installation_id)
    return list(session.scalars(stmt.order_by(GithubDelivery.received_at, GithubDelivery.id)))


def list_deliveries(session: Session, *, outcome: str | None = None, limit: int = 50) -> list[GithubDelivery]:
    """The newest deliveries first, optionally only those with ``outcome``."""
    stmt = select(GithubDelivery).order_by(GithubDelivery.id.desc()).limit(limit)
    if outcome is not None:
        stmt = stmt.where(GithubDelivery.outcome == outcome)
    return list(session.scalars(stmt))


# --- retention ----------------------------------------------------------------------


def purge_deliveries(session: Session, older_than: datetime) -> int:
    """Delete delivery records received before ``older_than`` (in the caller's transaction); how many."""
    result = session.execute(
        delete(GithubDelivery).where(GithubDelivery.received_at < older_than).returning(GithubDelivery.id))
    return len(result.all())


def uninstalled_before(session: Session, before: datetime) -> list[tuple[str, datetime]]:
    """Slugs of tenants whose installation was deleted before ``before``, and when, oldest first."""
    rows = session.execute(
        select(Tenant.slug, TenantInstallation.uninstalled_at)
        .join(TenantInstallation, TenantInstallation.tenant_id == Tenant.id)
        .where(TenantInstallation.uninstalled_at < before)
        .order_by(TenantInstallation.uninstalled_at, Tenant.slug)
    )
    return [(slug, when) for slug, when in rows if when is not None]
