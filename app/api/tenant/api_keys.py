"""/v1/api-keys: the bound tenant's API keys, managed by its admin keys only."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprints import TenantBlueprint
from app.extensions import db
from app.schemas.api_keys import (
    ApiKeyCreatedSchema,
    ApiKeyCreateSchema,
    ApiKeyPageSchema,
)
from app.schemas.common import PageQuerySchema
from app.services import api_keys as service

blp = TenantBlueprint(
    "api_keys", __name__, url_prefix="/v1/api-keys",
    description="API keys of the tenant the (admin) API key belongs to.",
    read="admin", write="admin",
)


@blp.route("")
class ApiKeys(MethodView):
    @blp.doc(operationId="listApiKeys")
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, ApiKeyPageSchema)
    def get(self, query: dict[str, Any]):
        """List keys in id order, revoked ones included; never their tokens."""
        return service.list_api_keys(db.session(), **query)

    @blp.doc(operationId="createApiKey")
    @blp.arguments(ApiKeyCreateSchema)
    @blp.response(201, ApiKeyCreatedSchema)
    def post(self, body: dict[str, Any]):
        """Issue a key with a role (viewer, member, admin); the token is in this response only."""
        return service.create_api_key(db.session(), **body)


@blp.route("/<int:key_id>")
class ApiKeyById(MethodView):
    @blp.doc(operationId="revokeApiKey")
    @blp.response(204)
    @blp.alt_response(404, description="No such key in this tenant.")
    @blp.alt_response(409, description="Already revoked, or the tenant's last active admin key.")
    def delete(self, key_id: int):
        """Revoke a key: refused from the next request on, in every process; it stays listed."""
        service.revoke_api_key(db.session(), key_id)
