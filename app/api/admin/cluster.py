"""/v1/admin/cluster and /v1/admin/tenants/<slug>/move: the Citus cluster, for operators.

The same core functions as ``flask cluster status`` and ``flask tenants move``
(:mod:`app.tenancy.cluster`, :mod:`app.tenancy.placement`). On plain PostgreSQL both
answer 409 ``placement-refused`` naming the reason.
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprints import AdminBlueprint
from app.extensions import db
from app.schemas.cluster import ClusterSchema, MoveResultSchema, MoveSchema
from app.tenancy import cluster, placement
from app.tenancy.errors import InvalidSlug, MoveFailed, PlacementRefused, TenantNotFound
from app.tenancy.naming import validate_slug

blp = AdminBlueprint("admin_cluster", __name__, url_prefix="/v1/admin", description="The Citus cluster (admin token).")


@blp.route("/cluster")
class Cluster(MethodView):
    @blp.doc(operationId="getCluster")
    @blp.response(200, ClusterSchema)
    @blp.alt_response(409, description="The database is not a Citus coordinator.")
    def get(self):
        """Nodes with their tenants and bytes, and the tenants whose schema is not distributed yet."""
        with db.engine.connect() as connection:
            try:
                return cluster.status(connection).as_dict()
            except cluster.NotCitus as exc:
                raise PlacementRefused(str(exc)) from None


@blp.route("/tenants/<slug>/move")
class TenantMove(MethodView):
    @blp.doc(operationId="moveTenant")
    @blp.arguments(MoveSchema)
    @blp.response(200, MoveResultSchema)
    @blp.alt_response(404, description="No such tenant.")
    @blp.alt_response(409, description="Refused: not Citus, unknown node, already there, not distributed, "
                                       "or the tenant is being migrated, provisioned or deleted.")
    @blp.alt_response(503, description="Citus gave up; the tenant stays where it was.")
    def post(self, body: dict[str, Any], slug: str):
        """Move the tenant's schema to another worker, online (``citus_schema_move``); audited.

        Synchronous: answers when the move is done (seconds for a small tenant).
        """
        try:
            validate_slug(slug)
        except InvalidSlug:
            raise TenantNotFound(slug) from None  # as for GET /v1/admin/tenants/{slug}: no tenant has it
        db.session.remove()  # the move runs on connections of its own; hold none meanwhile
        result = placement.move_tenant(db.engine, slug, body["node"], mode=body["mode"])
        if result.status != "moved":
            raise MoveFailed(slug, result.error or "unknown error")
        return result.as_dict()
