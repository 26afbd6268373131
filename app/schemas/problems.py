"""The problem documents (RFC 9457, ``application/problem+json``): one schema per status.

Every error the API sends is built by :func:`app.api.errors.problem`: ``type``,
``title``, ``status`` and ``detail`` always, ``errors`` (messages per field) on a
validation error and on some conflicts, and the quota's figures on ``quota-exceeded``.
Each status the document names gets a schema of its own whose ``type`` and ``status``
are enums of what that status can carry, so a generated client can tell a quota refusal
from a role refusal, and a 422 from a 409, by type alone.
"""

from __future__ import annotations

from marshmallow import fields, validate

from .common import ResponseSchema

#: Every problem's ``type`` starts with this (app.api.errors builds them).
PROBLEM_BASE = "https://tenantry.dev/problems/"


def _type(*slugs: str) -> fields.String:
    uris = [PROBLEM_BASE + slug for slug in slugs]
    return fields.String(validate=validate.OneOf(uris), metadata={"example": uris[0]})


def _status(status: int) -> fields.Integer:
    return fields.Integer(validate=validate.OneOf([status]))


class ProblemSchema(ResponseSchema):
    """Any problem document (the ``default`` response: 405, 406, 500 …)."""

    type = fields.String(metadata={"example": PROBLEM_BASE + "not-found",
                                   "description": "A URI naming the kind of problem; stable, compare it."})
    title = fields.String(metadata={"description": "Short, the same for every problem of this type."})
    status = fields.Integer(metadata={"description": "The HTTP status."})
    detail = fields.String(metadata={"description": "What went wrong with this request, for a person."})


class FieldErrors(fields.Dict):
    """Messages per field: ``{"name": ["Not a valid GitHub repository name."]}``."""

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(keys=fields.String(), values=fields.List(fields.String()),
                         metadata={"description": "Messages per field (``_schema``: the body as a whole)."},
                         **kwargs)


class BadRequestProblemSchema(ProblemSchema):
    """400: the body is not valid JSON."""

    type = _type("bad-request")
    status = _status(400)


class UnauthorizedProblemSchema(ProblemSchema):
    """401: no credential, a malformed one, or one that is unknown, revoked or expired."""

    type = _type("unauthorized")
    status = _status(401)


class ForbiddenProblemSchema(ProblemSchema):
    """403 ``forbidden``: the credential's role is below the operation's, or a tenant credential on the admin API."""

    type = _type("forbidden")
    status = _status(403)


class TenantSuspendedProblemSchema(ProblemSchema):
    """403 ``tenant-suspended``: the credential's tenant is suspended; nothing was read or changed."""

    type = _type("tenant-suspended")
    status = _status(403)


class TenantPendingProblemSchema(ProblemSchema):
    """403 ``tenant-pending``: the credential's tenant (installed from GitHub) is not activated yet."""

    type = _type("tenant-pending")
    status = _status(403)


class QuotaProblemSchema(ProblemSchema):
    """403 ``quota-exceeded``: the plan's limit is reached; the quota, its limit and the usage."""

    type = _type("quota-exceeded")
    status = _status(403)
    quota = fields.String(metadata={"example": "repositories"})
    limit = fields.Integer()
    usage = fields.Integer()


class NotFoundProblemSchema(ProblemSchema):
    """404: no such resource (in this tenant), or a tenant hint naming another tenant."""

    type = _type("not-found")
    status = _status(404)


class ConflictProblemSchema(ProblemSchema):
    """409: the change collides with the current state; ``type`` says how."""

    OPTIONAL = frozenset({"errors"})

    type = _type("conflict", "tenant-exists", "tenant-busy", "api-key-revoked", "last-admin-key",
                 "placement-refused", "github-sync-unavailable", "last-owner", "invitation-used")
    status = _status(409)
    errors = FieldErrors()


class GoneProblemSchema(ProblemSchema):
    """410: it existed and is no more usable (an expired invitation)."""

    type = _type("invitation-expired")
    status = _status(410)


class PayloadTooLargeProblemSchema(ProblemSchema):
    """413: the body is larger than MAX_CONTENT_LENGTH."""

    type = _type("payload-too-large")
    status = _status(413)


class UnsupportedMediaTypeProblemSchema(ProblemSchema):
    """415: a body that is not ``application/json``."""

    type = _type("unsupported-media-type")
    status = _status(415)


class ValidationProblemSchema(ProblemSchema):
    """422: the input breaks a rule; ``errors`` names each field and why."""

    type = _type("validation-error")
    status = _status(422)
    errors = FieldErrors()


class RateLimitedProblemSchema(ProblemSchema):
    """429: the tenant's plan allows no more requests this minute; see the Retry-After header."""

    type = _type("too-many-requests")
    status = _status(429)


class UnavailableProblemSchema(ProblemSchema):
    """503: the database does not answer or is not migrated, or a move gave up; try again later."""

    type = _type("database-unavailable", "database-not-migrated", "service-unavailable", "move-failed")
    status = _status(503)
