"""The OpenAPI document is the contract: a client generated from it needs no hand edits.

flask-smorest writes the document from the views' decorators; this apispec plugin
completes each operation with what is decided outside the view, the same way for all:

- **Credentials.** Three security schemes: ``adminToken`` (the admin API),
  ``tenantApiKey`` and ``tenantJwt`` (the tenant API; either one). Each operation names
  the one(s) it takes (:mod:`app.api.blueprints` sets them per blueprint); the probes
  and /metrics name none. A tenant operation also carries the role it needs, as
  ``x-required-role`` and in its description.
- **Errors.** Every error is ``application/problem+json`` (:mod:`app.api.errors`), and
  every status an operation can answer has a schema of its own
  (:mod:`app.schemas.problems`): 401, 403 and 503 where credentials and the database
  are involved, 404 where the path names a resource and on the tenant API (a tenant
  hint naming another tenant), 429 with ``Retry-After`` on the tenant API, 400, 413 and
  415 where a body is read, 422 everywhere (any query value holding a NUL character is
  refused). A 403 on the tenant API is one of ``forbidden`` (role),
  ``tenant-suspended``, ``tenant-pending`` and, where a view documents it, ``quota-exceeded``.
- **Partial updates.** A PATCH body (:class:`app.schemas.common.PatchSchema`) has
  ``minProperties: 1``: ``{}`` is refused.
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow.common import resolve_schema_cls

from app.api.errors import PROBLEM_MIMETYPE
from app.schemas import problems
from app.schemas.common import PatchSchema

JSON = "application/json"

ADMIN_SCHEME = "adminToken"
API_KEY_SCHEME = "tenantApiKey"
JWT_SCHEME = "tenantJwt"

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    ADMIN_SCHEME: {
        "type": "http", "scheme": "bearer",
        "description": "The platform's ADMIN_TOKEN, for /v1/admin/*. A tenant credential there is 403.",
    },
    API_KEY_SCHEME: {
        "type": "http", "scheme": "bearer", "bearerFormat": "tnt_<prefix>_<secret>",
        "description": "A tenant API key (POST /v1/admin/tenants issues the first, POST /v1/api-keys more). "
                       "It binds its tenant and has a role: viewer < member < admin.",
    },
    JWT_SCHEME: {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "A JWT signed with JWT_SECRET, JWT_PUBLIC_KEY or a key of the JWKS at JWT_JWKS_URL "
                       "(by kid), whose `tenant` and `role` claims stand for a key's tenant and role (when the "
                       "server is configured for JWTs); with JWT_ROLE_SOURCE=member, its `sub` or verified "
                       "`email` names an active member of the tenant, whose role "
                       "(viewer < member < admin < owner) applies.",
    },
}
#: The ``security`` of an operation, by who may call it.
ADMIN_SECURITY: list[dict[str, list[str]]] = [{ADMIN_SCHEME: []}]
TENANT_SECURITY: list[dict[str, list[str]]] = [{API_KEY_SCHEME: []}, {JWT_SCHEME: []}]
ROLE_EXTENSION = "x-required-role"
ROLES = ("viewer", "member", "admin")

#: The generic problem schema (flask-smorest's ``ERROR_SCHEMA``), used for ``default``.
PROBLEM_COMPONENT = "Problem"
#: The schema of each status, where an error response names only the generic one.
SCHEMA_OF_STATUS: dict[int, type[problems.ProblemSchema]] = {
    400: problems.BadRequestProblemSchema,
    401: problems.UnauthorizedProblemSchema,
    403: problems.ForbiddenProblemSchema,
    404: problems.NotFoundProblemSchema,
    409: problems.ConflictProblemSchema,
    410: problems.GoneProblemSchema,
    413: problems.PayloadTooLargeProblemSchema,
    415: problems.UnsupportedMediaTypeProblemSchema,
    422: problems.ValidationProblemSchema,
    429: problems.RateLimitedProblemSchema,
    503: problems.UnavailableProblemSchema,
}
EXTRA_SCHEMAS: tuple[type[problems.ProblemSchema], ...] = (
    problems.TenantSuspendedProblemSchema, problems.TenantPendingProblemSchema, problems.QuotaProblemSchema)

#: Response components: (status, name, description, headers).
_RESPONSES: dict[str, tuple[int, str, dict[str, Any]]] = {
    "BadRequest": (400, "The body is not valid JSON.", {}),
    "Unauthorized": (401, "No credential, a malformed one, or one that is unknown, revoked or expired.", {
        "WWW-Authenticate": {"description": "Bearer realm=\"tenantry\"", "required": True,
                             "schema": {"type": "string"}},
    }),
    "AdminForbidden": (403, "A tenant credential (API key or JWT) on the admin API.", {}),
    "NotFound": (404, "No such resource (another tenant's ids do not exist from here).", {}),
    "TenantNotFound": (404, "No such resource in this tenant, or a tenant hint (Host, X-Tenant) naming "
                            "another tenant.", {}),
    "PayloadTooLarge": (413, "The body is larger than MAX_CONTENT_LENGTH.", {}),
    "UnsupportedMediaType": (415, "A body that is not application/json.", {}),
    "ValidationFailed": (422, "The input breaks a rule of its schema or one the schema cannot say (an unknown "
                              "plan, a reserved slug, a time range ending before it starts); a query value "
                              "holding a NUL character. `errors` names each field.", {}),
    "RateLimited": (429, "The tenant's plan allows no more requests this minute.", {
        "Retry-After": {"description": "Seconds until the tenant's budget is renewed.", "required": True,
                        "schema": {"type": "integer", "minimum": 1}},
    }),
    "Unavailable": (503, "The database does not answer, or is not migrated (`flask db upgrade`); try again.", {}),
}


def _ref(schema: type[problems.ProblemSchema]) -> str:
    return schema.__name__.removesuffix("Schema")


def _is_error(status: str | int) -> bool:
    return str(status) == "default" or (str(status).isdigit() and int(status) >= 400)


class ProblemJsonPlugin(BasePlugin):
    """Completes the document: security, roles, a problem schema for every error status (see the module doc)."""

    spec: APISpec

    def init_spec(self, spec: APISpec) -> None:
        super().init_spec(spec)
        self.spec = spec
        for name, scheme in SECURITY_SCHEMES.items():
            spec.components.security_scheme(name, scheme)
        for schema in (*SCHEMA_OF_STATUS.values(), *EXTRA_SCHEMAS):
            spec.components.schema(_ref(schema), schema=schema, lazy=True)
        for name, (status, description, headers) in _RESPONSES.items():
            response: dict[str, Any] = {
                "description": description,
                "content": {PROBLEM_MIMETYPE: {"schema": _ref(SCHEMA_OF_STATUS[status])}},
            }
            if headers:
                response["headers"] = headers
            spec.components.response(name, response, lazy=True)

    def schema_helper(self, name: str, definition: dict, **kwargs: Any) -> dict | None:
        schema = kwargs.get("schema")
        cls = resolve_schema_cls(schema) if schema is not None else None
        if isinstance(cls, type) and issubclass(cls, PatchSchema):
            return {"minProperties": cls.MIN_PROPERTIES}
        return None

    def response_helper(self, response: dict, **kwargs: Any) -> dict | None:
        # flask-smorest registers its error responses (default, one per status) with the
        # generic Problem schema under application/json: they are problem documents.
        if "content" in response:
            _as_problem(response)
        return response

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **kwargs: Any) -> None:
        for method, operation in (operations or {}).items():
            # Statuses as strings (flask-smorest leaves some as integers), in order, ``default`` last.
            responses = {str(status): response for status, response in operation.get("responses", {}).items()}
            operation["responses"] = responses
            for status, response in responses.items():
                if isinstance(response, dict) and _is_error(status):
                    _as_problem(response, SCHEMA_OF_STATUS.get(int(status)) if status != "default" else None)
            security = operation.get("security")
            standard = ["ValidationFailed"]
            if "requestBody" in operation:
                standard += ["BadRequest", "PayloadTooLarge", "UnsupportedMediaType"]
            if "{" in (path or ""):
                standard.append("NotFound")
            if security == ADMIN_SECURITY:
                standard += ["Unauthorized", "AdminForbidden", "Unavailable"]
            elif security == TENANT_SECURITY:
                standard += ["Unauthorized", "TenantNotFound", "RateLimited", "Unavailable"]
                self._document_tenant_access(operation, method)
            for name in standard:
                status = str(_RESPONSES[name][0])
                if status not in responses or responses[status] == "UNPROCESSABLE_ENTITY" or name == "TenantNotFound":
                    responses[status] = name
            operation["responses"] = dict(sorted(responses.items(), key=lambda item: (item[0] == "default", item[0])))

    @staticmethod
    def _document_tenant_access(operation: dict[str, Any], method: str) -> None:
        """The role in the description, and 403 as each refusal a tenant credential can get here."""
        role = operation[ROLE_EXTENSION]
        needs = f"Needs a tenant credential with role `{role}`" + (" or above" if role != "admin" else "") + "."
        operation["description"] = f"{operation['description']}\n\n{needs}" if operation.get("description") else needs
        refusals: list[dict[str, str] | str] = []
        if role != ROLES[0]:  # every credential has viewer at least
            refusals.append(_ref(problems.ForbiddenProblemSchema))
        refusals.append(_ref(problems.TenantSuspendedProblemSchema))
        refusals.append(_ref(problems.TenantPendingProblemSchema))
        documented = operation["responses"].get("403")
        descriptions = ["forbidden: the credential's role is below `" + role + "`."] if role != ROLES[0] else []
        descriptions.append("tenant-suspended: the tenant is suspended.")
        descriptions.append("tenant-pending: the tenant (installed from GitHub) is not activated yet.")
        if isinstance(documented, dict):  # a view's own 403 (quota-exceeded)
            refusals.append(documented["content"][PROBLEM_MIMETYPE]["schema"])
            descriptions.append(documented.get("description", ""))
        schema = {"oneOf": refusals} if len(refusals) > 1 else refusals[0]
        operation["responses"]["403"] = {
            "description": " ".join(descriptions),
            "content": {PROBLEM_MIMETYPE: {"schema": schema}},
        }


def _as_problem(response: dict[str, Any], schema: type[problems.ProblemSchema] | None = None) -> None:
    """Move an error response's body to ``application/problem+json``; the status's schema
    replaces the generic one (or none)."""
    content = response.setdefault("content", {})
    if JSON in content:
        content[PROBLEM_MIMETYPE] = content.pop(JSON)
    media = content.setdefault(PROBLEM_MIMETYPE, {})
    current = media.get("schema")
    generic = current in (None, PROBLEM_COMPONENT) or (
        isinstance(current, dict) and current.get("$ref", "").endswith("/" + PROBLEM_COMPONENT))
    if generic:
        media["schema"] = _ref(schema) if schema is not None else PROBLEM_COMPONENT
