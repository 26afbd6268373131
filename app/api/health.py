"""/healthz (the process is up) and /readyz (the database answers, public schema at head)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields
from werkzeug.exceptions import ServiceUnavailable

from app import public_migrations
from app.extensions import db

blp = Blueprint("health", __name__, description="Liveness and readiness probes.")


class HealthSchema(Schema):
    status = fields.String()
    public_revision = fields.String(allow_none=True)
    public_head = fields.String(allow_none=True)


@blp.route("/healthz")
class Health(MethodView):
    @blp.doc(security=[])  # the probes need no credentials
    @blp.response(200, HealthSchema)
    def get(self):
        """The process is up; touches nothing else."""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, description="Database unreachable or public schema behind head.")
    def get(self):
        """Ready to serve: the database answers and the public schema is at head."""
        current = public_migrations.current_revision(db.session().connection())
        head = public_migrations.head_revision()
        if current != head:
            raise ServiceUnavailable(
                f"The public schema is at {current or 'nothing'}, not {head}: run `flask db upgrade`."
            )
        return {"status": "ready", "public_revision": current, "public_head": head}
