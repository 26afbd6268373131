"""/metrics: Prometheus text, for a scraper on the internal network (see app.metrics).

Open by default, like the probes: it carries no tenant data (no tenant label, no
slug), only counts and timings. ``METRICS_TOKEN`` makes it want a bearer token;
``METRICS_ENABLED=off`` removes the route (and its entry in the OpenAPI document).
"""

from __future__ import annotations

import hmac

from flask import Response, current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from werkzeug.exceptions import Unauthorized

from app import metrics
from app.extensions import db
from app.tenancy.migrations import head_revision

blp = Blueprint("metrics", __name__, description="Prometheus metrics.")


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(operationId="getMetrics", security=[], responses={"200": {
        "description": "Prometheus text exposition format 0.0.4.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }})
    @blp.alt_response(401, description="METRICS_TOKEN is set and the request did not send it.")
    def get(self):
        """Request, provisioning, pool and fan-out metrics; never a tenant label."""
        _check_token()
        config = current_app.config
        body = metrics.render(
            db.engine, head_revision(config["TENANT_MIGRATIONS_LOCATION"]), config["PROMETHEUS_MULTIPROC_DIR"]
        )
        return Response(body, mimetype=None, content_type=metrics.CONTENT_TYPE)


def _check_token() -> None:
    expected = current_app.config.get("METRICS_TOKEN")
    if not expected:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("/metrics wants 'Authorization: Bearer <METRICS_TOKEN>'.")
