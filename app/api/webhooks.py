"""POST /v1/webhooks/github: verify a GitHub App delivery, parse it, hand it to the core.

Only what is decided by HTTP is here; what a delivery does is :mod:`app.services.github`.

The signature is checked first, over the raw body, before anything of the request is
parsed: ``X-Hub-Signature-256`` must be ``sha256=`` and the hex HMAC-SHA256 of the body
with ``GITHUB_WEBHOOK_SECRET`` (or ``GITHUB_WEBHOOK_SECRET_PREVIOUS`` during a rotation),
compared in constant time against every configured secret. Anything else is 401 and
nothing is written. (The app's generic input check, which parses every JSON body, skips
this blueprint for that reason: :func:`app.api.inputs.accept_raw_bodies`.) A body over
``MAX_REQUEST_BYTES`` is 413 before it is read.

The standard library's ``hmac`` does the verification rather than githubkit's
``verify``: that is the same ``hmac.compare_digest`` of the same digest, and githubkit
would bring pydantic, httpx and its generated schema packages into every web process
for these few lines. (The GitHub API client of the repository sync is another matter.)

The blueprint is registered only when ``GITHUB_WEBHOOK_SECRET`` is set: without it the
route does not exist (404) and the OpenAPI document does not name it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from werkzeug.exceptions import BadRequest, Unauthorized, UnsupportedMediaType

from app.extensions import db, tenant_roles_active
from app.schemas.github import DeliveryResultSchema
from app.services import github

SIGNATURE_HEADER = "X-Hub-Signature-256"
#: GitHub's delivery ids are GUIDs; event names are snake_case words.
_DELIVERY_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_EVENT = re.compile(r"[a-z_]{1,60}")

blp = Blueprint("github_webhooks", __name__, description="GitHub App webhooks (signed by GitHub).")


@blp.route("/v1/webhooks/github")
class GithubWebhook(MethodView):
    @blp.doc(operationId="receiveGithubWebhook", security=[], parameters=[
        {"in": "header", "name": SIGNATURE_HEADER, "required": True, "schema": {"type": "string"},
         "description": "sha256=<hex HMAC-SHA256 of the raw body with the App's webhook secret>."},
        {"in": "header", "name": "X-GitHub-Delivery", "required": True, "schema": {"type": "string"},
         "description": "The delivery's id: a redelivery carries the same one."},
        {"in": "header", "name": "X-GitHub-Event", "required": True, "schema": {"type": "string"},
         "description": "The event: installation, installation_repositories, repository, …"},
    ], requestBody={"required": True, "content": {"application/json": {"schema": {
        "type": "object", "description": "The event's payload, as GitHub documents it."}}}})
    @blp.response(200, DeliveryResultSchema, description="Applied, already in place (duplicate), or a redelivery "
                                                         "answered from the record of its first attempt.")
    @blp.alt_response(202, schema=DeliveryResultSchema,
                      description="Recorded and not applied: an event or action not handled, or an installation "
                                  "not linked to a tenant (its payload is kept).")
    @blp.alt_response(401, description="No X-Hub-Signature-256, or not the body's signature with a configured "
                                       "secret; nothing was written.")
    @blp.alt_response(503, description="The database does not answer; GitHub retries nothing by itself: "
                                       "redeliver it.")
    @blp.alt_response(500, description="Applying the delivery failed; it is recorded as failed (with its payload) "
                                       "and applied again when redelivered.")
    def post(self) -> Any:
        """Receive a GitHub App webhook delivery: verified, recorded once per delivery id, applied."""
        body = request.get_data(cache=True)  # 413 above MAX_CONTENT_LENGTH, before reading it
        verify_signature(body, request.headers.get(SIGNATURE_HEADER))
        result = github.receive(db.session(), _delivery(body), _settings())
        return result, 202 if result.outcome == "ignored" and not result.redelivery else 200


def verify_signature(body: bytes, header: str | None) -> None:
    """401 unless ``header`` is ``sha256=<hex HMAC-SHA256 of body>`` with a configured secret.

    Every secret is compared, whichever matches, in constant time.
    """
    if not header:
        raise Unauthorized(f"Missing {SIGNATURE_HEADER}; deliveries are signed with the App's webhook secret.")
    scheme, _, signature = header.partition("=")
    secrets = [current_app.config.get(key) for key in ("GITHUB_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET_PREVIOUS")]
    matches = [
        hmac.compare_digest(hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode(),
                            signature.strip().encode())
        for secret in secrets if secret
    ]
    if scheme.strip().lower() != "sha256" or not any(matches):
        raise Unauthorized(f"{SIGNATURE_HEADER} is not this body's signature with the webhook secret.")


def _delivery(body: bytes) -> github.Delivery:
    """The verified request as a delivery: 400 for missing headers or a body that is not a JSON object."""
    delivery_id = request.headers.get("X-GitHub-Delivery", "")
    event = request.headers.get("X-GitHub-Event", "")
    if not _DELIVERY_ID.fullmatch(delivery_id) or not _EVENT.fullmatch(event):
        raise BadRequest("A delivery needs X-GitHub-Delivery (its id) and X-GitHub-Event headers.")
    if not request.is_json:
        raise UnsupportedMediaType("Set the App's webhook content type to application/json.")
    try:
        text = body.decode("utf-8")
        payload = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise BadRequest("The payload is not a JSON object.")
    return github.Delivery(delivery_id=delivery_id, event=event, body=text, payload=payload)


def _settings() -> github.Settings:
    config = current_app.config
    return github.Settings(default_plan=config["GITHUB_DEFAULT_PLAN"],
                           migrations_location=config["TENANT_MIGRATIONS_LOCATION"],
                           tenant_role=tenant_roles_active())
