"""/v1/admin/migrations: the tenant-migration ledger, read-only."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprints import AdminBlueprint
from app.extensions import db
from app.schemas.common import PageQuerySchema
from app.schemas.migrations import (
    MigrationRunDetailSchema,
    MigrationRunPageSchema,
    OutcomeQuerySchema,
    RunWithOutcomes,
)
from app.tenancy import ledger

blp = AdminBlueprint(
    "admin_migrations", __name__, url_prefix="/v1/admin/migrations",
    description="Runs of the tenant-migration fan-out and what they did to each schema (admin token).",
)


@blp.route("")
class MigrationRuns(MethodView):
    @blp.doc(operationId="listMigrationRuns")
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, MigrationRunPageSchema)
    def get(self, query: dict[str, Any]):
        """List migration runs, newest first."""
        return ledger.list_runs(db.session(), limit=query["limit"], cursor=query["cursor"])


@blp.route("/<int:run_id>")
class MigrationRunById(MethodView):
    @blp.doc(operationId="getMigrationRun")
    @blp.arguments(OutcomeQuerySchema, location="query")
    @blp.response(200, MigrationRunDetailSchema)
    @blp.alt_response(404, description="No run with this id.")
    def get(self, query: dict[str, Any], run_id: int):
        """One run and one page of its per-tenant outcomes, in tenant slug order."""
        session = db.session()
        run = ledger.get_run(session, run_id)
        return RunWithOutcomes(run, ledger.list_outcomes(session, run_id, **query))
