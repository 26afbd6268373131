"""Repository sync: a tenant's repositories reconciled with what its installation sees on GitHub.

Webhooks keep a tenant in step as things happen; a sync repairs whatever they missed
(a delivery lost, one for an installation not linked yet, a repository added before
the App subscribed). For one tenant (:func:`sync_tenant`):

1. **Read the link** (``public.tenant_installations``): the installation id.
2. **Ask GitHub, holding nothing in the database.** githubkit does the GitHub side as
   the App: it signs the App's JWT (RS256, with ``GITHUB_PRIVATE_KEY``), exchanges it for
   an installation token (cached until it expires), pages through
   ``GET /installation/repositories`` 100 at a time (following the ``Link`` header),
   and, when GitHub answers with a rate limit (403/429 with ``Retry-After``, or ``X-RateLimit-Remaining: 0`` and
   ``X-RateLimit-Reset``), sleeps as long as it says and asks again
   (:class:`RateLimitBackoff`), instead of failing. A wait longer than
   ``GITHUB_RATE_LIMIT_MAX_WAIT`` ends that tenant's sync with an error.
3. **Reconcile in one transaction**, under the installation's and the tenant's advisory
   locks (the order webhook deliveries take them in): a repository GitHub lists and the
   tenant lacks is registered (or enabled again), one whose owner or name changed is
   updated, an enabled one GitHub no longer lists is disabled (never deleted), each with
   its audit event as ``github-sync:<run>``.

The repository list is read as JSON (``id``, ``name``, ``full_name``, ``owner.login``)
rather than as githubkit's pydantic models: those validate every field of every
repository, and a field GitHub adds or changes in one repository would fail the whole
list for nothing we read.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from githubkit import AppAuthStrategy, GitHub
from githubkit.exception import GitHubException, RateLimitExceeded, RequestFailed
from githubkit.retry import RetryOption, RetryServerError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models.public import Tenant, TenantInstallation
from app.models.tenant import Repository
from app.tenancy import audit, locks
from app.tenancy.binding import tenant_scope
from app.tenancy.context import TenantBinding
from app.tenancy.errors import TenantNotFound

from .repositories import add_github_repository, change_repository

log = logging.getLogger(__name__)

PER_PAGE = 100


class SyncUnavailable(Exception):
    """A sync cannot start: no App credentials, or the tenant has no installation."""


class GithubNotConfigured(SyncUnavailable):
    def __init__(self) -> None:
        super().__init__("repository sync needs GITHUB_APP_ID and GITHUB_PRIVATE_KEY (docs/github.md)")


class NotInstalled(SyncUnavailable):
    def __init__(self, slug: str, why: str = "is not linked to a GitHub App installation") -> None:
        super().__init__(f"tenant {slug!r} {why}")
        self.slug = slug


@dataclass(frozen=True)
class AppCredentials:
    """How to reach GitHub as the App."""

    app_id: int
    private_key: str
    api_url: str = "https://api.github.com/"
    #: Longest wait (seconds) a rate limit may impose before the tenant's sync gives up.
    max_wait: float = 900

    @classmethod
    def from_config(cls, config: Any) -> AppCredentials:
        """From the app's settings; :class:`GithubNotConfigured` without them."""
        if not config.get("GITHUB_APP_ID") or not config.get("GITHUB_PRIVATE_KEY"):
            raise GithubNotConfigured()
        return cls(app_id=config["GITHUB_APP_ID"], private_key=config["GITHUB_PRIVATE_KEY"],
                   api_url=config["GITHUB_API_URL"], max_wait=config["GITHUB_RATE_LIMIT_MAX_WAIT"])


@dataclass(frozen=True)
class RemoteRepository:
    """A repository as GitHub lists it for the installation: what a row needs."""

    github_repo_id: int
    owner: str
    name: str


@dataclass
class SyncReport:
    """What one tenant's sync found and did. ``errors``: why it stopped, if it did."""

    slug: str
    discovered: int = 0
    registered: int = 0
    updated: int = 0
    deactivated: int = 0
    errors: list[str] = field(default_factory=list)
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RateLimitBackoff:
    """githubkit's retry decision: wait as GitHub's rate-limit headers say, up to a bound.

    A rate-limited request is retried after ``Retry-After`` seconds, or at
    ``X-RateLimit-Reset`` (githubkit reads both into ``retry_after``), up to
    ``max_retries`` times; a wait longer than ``max_wait`` seconds is not taken (the
    error stands). Server errors get githubkit's own retries (three, growing pauses).
    """

    def __init__(self, max_wait: float, max_retries: int = 5) -> None:
        self.max_wait = max_wait
        self.max_retries = max_retries
        self._server_errors = RetryServerError()

    def __call__(self, exc: GitHubException, retry_count: int) -> RetryOption:
        if isinstance(exc, RateLimitExceeded):
            wait = exc.retry_after if exc.retry_after is not None else timedelta(seconds=60)
            if retry_count < self.max_retries and wait.total_seconds() <= self.max_wait:
                log.warning("github.rate_limited: waiting %.0f s (%s %s)", wait.total_seconds(),
                            exc.request.method, exc.request.url.path, extra={"event": "github.rate_limited"})
                return RetryOption(True, max(wait, timedelta(seconds=1)))
            return RetryOption(False)
        return self._server_errors(exc, retry_count)


def installation_repositories(credentials: AppCredentials, installation_id: int) -> list[RemoteRepository]:
    """Every repository the installation can see, paged through as the App; may wait on rate limits.

    :raise githubkit.exception.GitHubException: GitHub refused (a token, a page), or a rate
        limit asked for a longer wait than allowed.
    """
    app = GitHub(AppAuthStrategy(credentials.app_id, credentials.private_key), base_url=credentials.api_url,
                 user_agent="tenantry", http_cache=False, auto_retry=RateLimitBackoff(credentials.max_wait))
    github = app.with_auth(app.auth.as_installation(installation_id))
    with github:  # one HTTP connection pool for the token and every page
        pages: Iterator[dict[str, Any]] = github.rest.paginate(  # follows the Link header's next page
            github.rest.apps.list_repos_accessible_to_installation,
            map_func=lambda response: list(response.json()["repositories"]), per_page=PER_PAGE,
        )
        return [_remote(repository) for repository in pages]


def _remote(repository: dict[str, Any]) -> RemoteRepository:
    owner = repository.get("owner", {}).get("login") or str(repository["full_name"]).partition("/")[0]
    return RemoteRepository(github_repo_id=int(repository["id"]), owner=str(owner), name=str(repository["name"]))


def installation_of(session: Session, slug: str) -> int:
    """The installation id of tenant ``slug``: :class:`TenantNotFound`, :class:`NotInstalled`."""
    row = session.execute(
        select(Tenant.id, TenantInstallation.installation_id, TenantInstallation.uninstalled_at)
        .outerjoin(TenantInstallation, TenantInstallation.tenant_id == Tenant.id).where(Tenant.slug == slug)
    ).first()
    if row is None:
        raise TenantNotFound(slug)
    if row.installation_id is None:
        raise NotInstalled(slug)
    if row.uninstalled_at is not None:
        raise NotInstalled(slug, "was uninstalled from GitHub")
    return int(row.installation_id)


def sync_tenant(session: Session, slug: str, credentials: AppCredentials, *, run: str | None = None) -> SyncReport:
    """Owns its transaction: reconcile tenant ``slug``'s repositories with GitHub, commit.

    GitHub's refusals and rate limits beyond the allowed wait end up in the report's
    ``errors`` (nothing changed then), not raised.

    :raise TenantNotFound, NotInstalled: nothing to sync.
    """
    started = time.perf_counter()
    report = SyncReport(slug=slug)
    installation_id = installation_of(session, slug)
    session.rollback()  # hold no snapshot or connection while GitHub answers
    try:
        remote = installation_repositories(credentials, installation_id)
    except (GitHubException, KeyError, TypeError, ValueError) as exc:
        report.errors.append(_describe(exc))
    else:
        report.discovered = len(remote)
        label = f"github-sync:{run or uuid.uuid4().hex[:12]}"[:64]
        actor = audit.Actor(label=label, request_id=label)
        with audit.acting_as(actor), session.begin():
            _reconcile(session, slug, installation_id, remote, report)
    report.duration_ms = round((time.perf_counter() - started) * 1000, 1)
    log.info("github.synced: %s", slug, extra={"event": "github.synced", "tenant": slug, **{
        k: v for k, v in report.as_dict().items() if k in ("discovered", "registered", "updated", "deactivated")}})
    return report


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RateLimitExceeded):
        return f"GitHub rate limit: asked to wait {exc.retry_after}, more than allowed; run it again later"
    if isinstance(exc, RequestFailed):
        return f"GitHub answered {exc.response.status_code} to {exc.request.method} {exc.request.url.path}"
    return f"{type(exc).__name__}: {exc}"


def _reconcile(
    session: Session, slug: str, installation_id: int, remote: Iterable[RemoteRepository], report: SyncReport
) -> None:
    connection = session.connection()
    locks.lock_installation(connection, installation_id)
    locks.lock_tenant(connection, slug)
    tenant = session.scalars(select(Tenant).where(Tenant.slug == slug)).one_or_none()
    if tenant is None:
        raise TenantNotFound(slug)
    wanted = {repository.github_repo_id: repository for repository in remote}
    with tenant_scope(TenantBinding.for_slug(tenant.id, tenant.slug, tenant.db_role), session):
        rows = {row.github_repo_id: row for row in session.scalars(select(Repository).with_for_update())}
        for repo_id, repository in wanted.items():
            row = rows.get(repo_id)
            if row is None:
                add_github_repository(session, repository.github_repo_id, repository.owner, repository.name)
                report.registered += 1
            elif not row.enabled or (row.owner, row.name) != (repository.owner, repository.name):
                report.registered += not row.enabled
                report.updated += row.enabled
                change_repository(session, row, "repository.enabled" if not row.enabled else "repository.updated",
                                  enabled=True, owner=repository.owner, name=repository.name)
        for repo_id, row in rows.items():
            if repo_id not in wanted and row.enabled:
                change_repository(session, row, "repository.disabled", enabled=False)
                report.deactivated += 1
        session.flush()


def tenants_to_sync(session: Session) -> list[str]:
    """Slugs of every tenant linked to an installation that is not uninstalled, in slug order."""
    return list(session.scalars(
        select(Tenant.slug).join(TenantInstallation, TenantInstallation.tenant_id == Tenant.id)
        .where(TenantInstallation.uninstalled_at.is_(None)).order_by(Tenant.slug)
    ))
