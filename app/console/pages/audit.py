"""The platform audit trail, newest first, filtered as the admin API filters it (tenant, action, time range)."""

from __future__ import annotations

from flask import render_template, request
from flask.typing import ResponseReturnValue

from app.extensions import db
from app.schemas.audit import PlatformAuditQuerySchema
from app.tenancy import audit

from . import forms
from .blueprint import bp

PAGE_SIZE = 50
#: The filters, as the admin API names them; since and until are read as UTC when they carry no offset.
FILTERS = ("tenant", "action", "since", "until")


@bp.get("/audit")
def audit_events() -> ResponseReturnValue:
    filters = {name: request.args.get(name, "").strip() for name in FILTERS}
    args = {**filters, "cursor": request.args.get("cursor", "")}
    for name in ("since", "until"):
        if args[name]:
            args[name] = forms.as_utc(args[name])
    query = forms.load_query(PlatformAuditQuerySchema(), args, (*FILTERS, "cursor"))
    page = audit.list_events(db.session(), platform=True, limit=PAGE_SIZE, **{
        name: query.get(name) for name in (*FILTERS, "cursor")})
    return render_template("console/audit.html", page=page, filters=filters)
