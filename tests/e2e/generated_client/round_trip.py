"""Provision -> create -> list -> patch -> delete, through the client generated from /v1/openapi.json.

Run by tests/e2e/test_generated_client.py, which generates the ``tenantry_client``
package next to this file, type-checks both with mypy (strict), then runs this against
a live server: ``python round_trip.py BASE_URL ADMIN_TOKEN SLUG``. Nothing here is edited
by hand to fit the client: every value is read with the type the document promises.
"""

from __future__ import annotations

import sys

from tenantry_client import AuthenticatedClient
from tenantry_client.api.admin_tenants import create_tenant, delete_tenant
from tenantry_client.api.repositories import (
    create_repository,
    delete_repository,
    get_repository,
    list_repositories,
    update_repository,
)
from tenantry_client.models import (
    NotFoundProblem,
    Repository,
    RepositoryCreate,
    RepositoryPage,
    RepositoryUpdate,
    TenantCreate,
    TenantCreated,
    ValidationProblem,
)


def main(base_url: str, admin_token: str, slug: str) -> None:
    admin = AuthenticatedClient(base_url=base_url, token=admin_token, raise_on_unexpected_status=True)

    created = create_tenant.sync(client=admin, body=TenantCreate(slug=slug, name="Round Trip Inc."))
    assert isinstance(created, TenantCreated), created
    token: str = created.api_key.token  # required in the document: a str, never Unset
    assert created.tenant.slug == slug and token.startswith("tnt_")

    tenant = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)
    repository = create_repository.sync(
        client=tenant, body=RepositoryCreate(github_repo_id=1296269, owner="octocat", name="hello-world"))
    assert isinstance(repository, Repository), repository
    assert repository.full_name == "octocat/hello-world" and repository.enabled is True
    repository_id: int = repository.id

    page = list_repositories.sync(client=tenant, enabled=True)
    assert isinstance(page, RepositoryPage), page
    assert [item.id for item in page.items] == [repository_id] and page.next_cursor is None

    empty_patch = update_repository.sync(
        repository_id=repository_id, client=tenant, body=RepositoryUpdate())
    assert isinstance(empty_patch, ValidationProblem), empty_patch  # minProperties: 1
    assert empty_patch.errors

    patched = update_repository.sync(
        repository_id=repository_id, client=tenant, body=RepositoryUpdate(enabled=False, name="hello-again"))
    assert isinstance(patched, Repository), patched
    assert patched.enabled is False and patched.full_name == "octocat/hello-again"

    deleted = delete_repository.sync_detailed(repository_id=repository_id, client=tenant)
    assert deleted.status_code == 204, deleted
    gone = get_repository.sync(repository_id=repository_id, client=tenant)
    assert isinstance(gone, NotFoundProblem), gone
    assert gone.status == 404

    dropped = delete_tenant.sync_detailed(slug=slug, client=admin)
    assert dropped.status_code == 204, dropped
    print("round trip ok")


if __name__ == "__main__":
    main(*sys.argv[1:4])
