"""Blueprints that say who may call them, to the request pipeline and to the document at once.

``AdminBlueprint`` checks the admin token before every view; ``TenantBlueprint`` checks a
tenant credential (API key or JWT) and its role, ``read`` for GET and ``write`` for the
other methods. Each also writes what it checks into every operation of the OpenAPI
document (``security``, and on the tenant API ``x-required-role``), so the document
cannot say one thing while the server checks another; ``app.api.openapi`` then adds the
error responses that follow from it.
"""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from app.api.auth import require_admin, tenant_key_required
from app.api.openapi import ADMIN_SECURITY, ROLE_EXTENSION, ROLES, TENANT_SECURITY

SAFE_METHODS = frozenset({"get", "head", "options"})


class AdminBlueprint(Blueprint):
    """/v1/admin/*: the admin token (``adminToken``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_request(require_admin)
        self._prepare_doc_cbks.append(self._document_access)

    @staticmethod
    def _document_access(doc: dict[str, Any], doc_info: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        doc["security"] = ADMIN_SECURITY
        return doc


class TenantBlueprint(Blueprint):
    """The tenant API: an API key or a JWT (``tenantApiKey``, ``tenantJwt``) with role ``read``/``write``."""

    def __init__(self, *args: Any, read: str, write: str, invitees: bool = False, **kwargs: Any) -> None:
        """``invitees``: a JWT naming no member yet passes too, as a viewer (accepting an invitation)."""
        super().__init__(*args, **kwargs)
        if read not in ROLES or write not in ROLES:
            raise ValueError(f"roles are {ROLES}, not {read!r}/{write!r}")
        self.read, self.write = read, write
        self.before_request(tenant_key_required(read=read, write=write, invitees=invitees))
        self._prepare_doc_cbks.append(self._document_access)

    def _document_access(self, doc: dict[str, Any], doc_info: dict[str, Any], *, method: str,
                         **kwargs: Any) -> dict[str, Any]:
        doc["security"] = TENANT_SECURITY
        doc[ROLE_EXTENSION] = self.read if method in SAFE_METHODS else self.write
        return doc
