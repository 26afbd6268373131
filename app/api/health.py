"""/healthz (the process is up) and /readyz (the database answers, public schema at head).

/readyz answers 503 (problem+json) when the database does not answer (``OperationalError``,
mapped in :mod:`app.api.errors`) or the public schema is not at head: this process
cannot serve. Tenant schemas behind head are reported, never a reason for 503: they
keep working at their revision (expand/contract), and ``flask tenants migrate``
brings them forward while the service runs.
"""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields
from werkzeug.exceptions import ServiceUnavailable

from app import public_migrations
from app.api import metering, ratelimit
from app.extensions import db
from app.schemas.common import ResponseSchema
from app.tenancy import cluster, directory
from app.tenancy.migrations import head_revision

blp = Blueprint("health", __name__, description="Liveness and readiness probes.")


class ReadyNodeSchema(ResponseSchema):
    address = fields.String(metadata={"example": "10.0.0.5:5432"})
    role = fields.String(metadata={"description": "coordinator or worker"})
    active = fields.Boolean()


class ReadyClusterSchema(ResponseSchema):
    citus_version = fields.String()
    nodes = fields.List(fields.Nested(ReadyNodeSchema))


class ReadyRateLimitsSchema(ResponseSchema):
    OPTIONAL = frozenset({"detail"})

    storage = fields.String(metadata={"description": "RATELIMIT_STORAGE_URI's scheme: memory or redis."})
    shared = fields.Boolean(metadata={
        "description": "Whether every worker process counts in the same place (false with memory://, "
                       "or while Redis fails and this process counts in memory)."})
    detail = fields.String(metadata={"description": "Present when shared is false: what that allows."})


class ReadyUsageSchema(ResponseSchema):
    OPTIONAL = frozenset({"detail"})

    storage = fields.String(metadata={
        "description": "USAGE_STORAGE_URI's scheme (memory, redis or rediss), or off when USAGE_METERING is."})
    shared = fields.Boolean(metadata={
        "description": "Whether every worker process counts in the same place, so monthly limits are exact "
                       "across them (false with memory://, or while Redis fails and this process counts in memory)."})
    detail = fields.String(metadata={"description": "Present when shared is false: what that allows."})


class HealthSchema(ResponseSchema):
    status = fields.String(metadata={"enum": ["ok"]})


class ReadySchema(ResponseSchema):
    OPTIONAL = frozenset({"cluster"})

    status = fields.String(metadata={"enum": ["ready"]})
    public_revision = fields.String(allow_none=True)
    public_head = fields.String(allow_none=True)
    tenant_head = fields.String(metadata={"description": "Head of the tenant migration stream."})
    tenant_schemas_behind = fields.Integer(
        metadata={"description": "Tenants whose recorded schema revision is not tenant_head (flask tenants migrate)."}
    )
    rate_limits = fields.Nested(ReadyRateLimitsSchema, metadata={
        "description": "Where tenants' rate-limit counts are kept. Never a reason for 503."})
    usage = fields.Nested(ReadyUsageSchema, metadata={
        "description": "Where tenants' usage counts are kept (docs/usage.md). Never a reason for 503."})
    cluster = fields.Nested(ReadyClusterSchema, metadata={
        "description": "On Citus only: the version and the cluster's nodes (pg_dist_node, no query to the workers)."})


@blp.route("/healthz")
class Health(MethodView):
    @blp.doc(operationId="checkLiveness", security=[])  # the probes need no credentials
    @blp.response(200, HealthSchema)
    def get(self):
        """The process is up; touches nothing else."""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.doc(operationId="checkReadiness", security=[])
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, description="Database unreachable or public schema behind head.")
    def get(self):
        """Ready to serve: the database answers and the public schema is at head.

        Also says how many tenant schemas are behind the tenant head; that never fails it.
        """
        current = public_migrations.current_revision(db.session().connection())
        head = public_migrations.head_revision()
        if current != head:
            raise ServiceUnavailable(
                f"The public schema is at {current or 'nothing'}, not {head}: run `flask db upgrade`."
            )
        tenant_head = head_revision(current_app.config["TENANT_MIGRATIONS_LOCATION"])
        ready = {
            "status": "ready", "public_revision": current, "public_head": head,
            "tenant_head": tenant_head, "tenant_schemas_behind": directory.count_behind(db.session(), tenant_head),
            "rate_limits": ratelimit.report(current_app), "usage": metering.report(current_app),
        }
        citus = cluster.citus_of(db.engine)
        if citus is not None:
            ready["cluster"] = {"citus_version": citus.version, "nodes": [
                {"address": n.address, "role": n.role, "active": n.active}
                for n in cluster.nodes(db.session().connection())]}
        return ready
