"""Repositories of the bound tenant: list, create, read, update, delete.

Every query is unqualified and resolves through the transaction's search_path, so a
row of another tenant is not filtered out here: it simply does not exist.
Functions flush when they need server-generated values and never commit. Every
change adds its audit event to the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models.tenant import Repository
from app.pagination import Page, decode_cursor, make_page
from app.tenancy import audit, usage

from . import quotas
from .errors import Conflict, NotFound, check_id

UPDATABLE = frozenset({"owner", "name", "enabled"})
#: What an audit event shows of a repository.
AUDITED = ("github_repo_id", "owner", "name", "full_name", "enabled")


def list_repositories(
    session: Session, *, limit: int = 50, cursor: str | None = None, enabled: bool | None = None
) -> Page[Repository]:
    """One page in id order; ``enabled`` filters when given."""
    stmt = select(Repository).order_by(Repository.id).limit(limit + 1)
    after = decode_cursor(cursor, int)
    if after is not None:
        stmt = stmt.where(Repository.id > after)
    if enabled is not None:
        stmt = stmt.where(Repository.enabled.is_(enabled))
    rows = session.scalars(stmt).all()
    return make_page(rows, limit, lambda r: r.id)


def create_repository(
    session: Session, *, github_repo_id: int, owner: str, name: str, enabled: bool = True
) -> Repository:
    """Insert a repository; :class:`Conflict` if its github_repo_id is taken in this tenant.

    :class:`~app.services.errors.QuotaExceeded` if the plan's ``max_repositories`` is
    reached: the check holds the tenant's quota lock until the transaction ends, so
    concurrent creates cannot overshoot it. One statement (``INSERT … ON CONFLICT DO
    NOTHING RETURNING``), so a duplicate costs no savepoint and leaves the transaction usable.
    """
    quotas.reserve_repository(session)
    stmt = (
        insert(Repository)
        .values(
            github_repo_id=github_repo_id,
            owner=owner,
            name=name,
            full_name=f"{owner}/{name}",
            enabled=enabled,
        )
        .on_conflict_do_nothing(index_elements=[Repository.github_repo_id])
        .returning(Repository)
    )
    created = session.scalars(stmt).one_or_none()
    if created is None:
        raise Conflict(
            f"A repository with github_repo_id {github_repo_id} exists already.", "github_repo_id"
        )
    audit.record(session, "repository.created", "repository", created.id,
                 after=audit.snapshot(created, AUDITED))
    # The month's peak of the gauge, counted once the create commits.
    usage.record_on_commit(session, usage.REPOSITORIES, quotas.repository_count(session))
    return created


def get_repository(session: Session, repository_id: int) -> Repository:
    check_id("repository", repository_id)
    repository = session.get(Repository, repository_id)
    if repository is None:
        raise NotFound("repository", repository_id)
    return repository


def update_repository(session: Session, repository_id: int, changes: dict[str, Any]) -> Repository:
    """Apply a partial update of owner, name and/or enabled; full_name follows."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    repository = get_repository(session, repository_id)
    change_repository(session, repository, "repository.updated", **changes)
    session.flush()  # server-side updated_at for the response
    session.refresh(repository, ["updated_at"])
    return repository


def add_github_repository(session: Session, github_repo_id: int, owner: str, name: str) -> Repository:
    """A repository GitHub reported for the tenant's installation: inserted enabled, audited.

    No quota check and no conflict handling, unlike :func:`create_repository`: the
    installation decides what is there, and the caller has looked the id up under lock.
    """
    repository = Repository(github_repo_id=github_repo_id, owner=owner, name=name,
                            full_name=f"{owner}/{name}", enabled=True)
    session.add(repository)
    session.flush()  # the new row's id, for its audit event
    audit.record(session, "repository.created", "repository", repository.id,
                 after=audit.snapshot(repository, AUDITED))
    return repository


def change_repository(session: Session, repository: Repository, action: str, **values: Any) -> None:
    """Set ``values`` on ``repository`` (full_name follows owner/name) and audit the change as ``action``."""
    before = audit.snapshot(repository, AUDITED)
    for field, value in values.items():
        setattr(repository, field, value)
    repository.full_name = f"{repository.owner}/{repository.name}"
    audit.record(session, action, "repository", repository.id,
                 before=before, after=audit.snapshot(repository, AUDITED))


def delete_repository(session: Session, repository_id: int) -> None:
    check_id("repository", repository_id)
    deleted = session.execute(
        delete(Repository).where(Repository.id == repository_id).returning(
            *(getattr(Repository, name) for name in AUDITED)
        )
    ).first()
    if deleted is None:
        raise NotFound("repository", repository_id)
    audit.record(session, "repository.deleted", "repository", repository_id,
                 before=dict(zip(AUDITED, deleted, strict=True)))
