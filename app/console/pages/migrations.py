"""Fan-out runs from the ledger, newest first, and what one run did to each tenant schema."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import render_template, request
from flask.typing import ResponseReturnValue

from app.extensions import db
from app.models.public import OUTCOME_STATUSES
from app.schemas.common import PageQuerySchema
from app.schemas.migrations import OutcomeQuerySchema
from app.tenancy import ledger

from . import forms
from .blueprint import bp

PAGE_SIZE = 50


@bp.get("/migrations")
def migrations() -> ResponseReturnValue:
    query = forms.load_query(PageQuerySchema(), request.args, ("cursor",))
    page = ledger.list_runs(db.session(), limit=PAGE_SIZE, cursor=query["cursor"])
    return render_template("console/migrations.html", page=page, now=datetime.now(UTC))


@bp.get("/migrations/<int:run_id>")
def migration_run(run_id: int) -> ResponseReturnValue:
    query = forms.load_query(OutcomeQuerySchema(), request.args, ("status", "cursor"))
    session = db.session()
    run = ledger.get_run(session, run_id)
    outcomes = ledger.list_outcomes(session, run_id, status=query.get("status"), limit=PAGE_SIZE,
                                    cursor=query["cursor"])
    return render_template("console/migration_run.html", run=run, outcomes=outcomes, status=query.get("status"),
                           statuses=OUTCOME_STATUSES, now=datetime.now(UTC))


@bp.app_template_filter("first_line")
def first_line(text: str | None) -> str:
    """An error's first line: what a table cell can show (the fan-out itself records no more)."""
    return (text or "").strip().partition("\n")[0]
