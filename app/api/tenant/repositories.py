"""/v1/repositories: the bound tenant's repositories."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprints import TenantBlueprint
from app.extensions import db
from app.schemas.problems import QuotaProblemSchema
from app.schemas.repositories import (
    RepositoryCreateSchema,
    RepositoryPageSchema,
    RepositoryQuerySchema,
    RepositorySchema,
    RepositoryUpdateSchema,
)
from app.services import repositories as service

blp = TenantBlueprint(
    "repositories", __name__, url_prefix="/v1/repositories",
    description="Repositories of the tenant the API key belongs to.",
    read="viewer", write="member",
)


@blp.route("")
class Repositories(MethodView):
    @blp.doc(operationId="listRepositories")
    @blp.arguments(RepositoryQuerySchema, location="query")
    @blp.response(200, RepositoryPageSchema)
    def get(self, query: dict[str, Any]):
        """List repositories in id order (keyset pagination), optionally by ``enabled``."""
        return service.list_repositories(db.session(), **query)

    @blp.doc(operationId="createRepository")
    @blp.arguments(RepositoryCreateSchema)
    @blp.response(201, RepositorySchema)
    @blp.alt_response(409, description="github_repo_id exists already in this tenant.")
    @blp.alt_response(403, schema=QuotaProblemSchema,
                      description="quota-exceeded: the plan's max_repositories is reached.")
    def post(self, body: dict[str, Any]):
        """Connect a repository, if the plan's ``max_repositories`` allows one more."""
        return service.create_repository(db.session(), **body)


@blp.route("/<int:repository_id>")
class RepositoryById(MethodView):
    @blp.doc(operationId="getRepository")
    @blp.response(200, RepositorySchema)
    def get(self, repository_id: int):
        """One repository; another tenant's id is 404."""
        return service.get_repository(db.session(), repository_id)

    @blp.doc(operationId="updateRepository")
    @blp.arguments(RepositoryUpdateSchema)
    @blp.response(200, RepositorySchema)
    def patch(self, body: dict[str, Any], repository_id: int):
        """Change owner, name and/or enabled."""
        return service.update_repository(db.session(), repository_id, body)

    @blp.doc(operationId="deleteRepository")
    @blp.response(204)
    def delete(self, repository_id: int):
        """Disconnect a repository."""
        service.delete_repository(db.session(), repository_id)
