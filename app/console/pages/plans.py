"""Plans: their limits, prices and tenants; create one, change one (the admin API's schemas and service)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from app.extensions import db
from app.models.public import Plan
from app.schemas.plans import PlanCreateSchema, PlanUpdateSchema
from app.services import plans
from app.services.errors import Conflict
from app.tenancy.migrations import head_revision

from . import forms
from .blueprint import bp
from .overview import tenant_counts

#: The numbers of the plan forms; a blank one is null: unlimited for a limit, refused for the price.
NUMBERS = ("max_repositories", "rate_limit_per_minute", "monthly_price_cents")


@bp.get("/plans", endpoint="plans")
def plan_list() -> ResponseReturnValue:
    """The plans, with the overview's tenant counts (cached the same way: no pass over every tenant per view)."""
    session = db.session()
    counts = tenant_counts(session, head_revision(current_app.config["TENANT_MIGRATIONS_LOCATION"]))
    return render_template("console/plans.html", plans=plans.list_plans(session), tenants=counts.by_plan,
                           counted_at=counts.counted_at)


@bp.route("/plans/new", methods=["GET", "POST"])
def new_plan() -> ResponseReturnValue:
    if request.method == "GET":
        return _form(None, {})
    data, errors = forms.load_form(PlanCreateSchema(), _typed(request.form, ("name", *NUMBERS)))
    if errors:
        return _form(None, errors)
    try:
        created = plans.create_plan(db.session(), **data)
    except Conflict as taken:
        return _form(None, {field: " ".join(texts) for field, texts in (taken.field_errors or {}).items()})
    flash(f"Created plan {created.name}.")
    return redirect(url_for(".plans"), 303)


@bp.route("/plans/<name>/edit", methods=["GET", "POST"])
def edit_plan(name: str) -> ResponseReturnValue:
    plan = plans.get_plan(db.session(), name)
    if request.method == "GET":
        return _form(plan, {})
    data, errors = forms.load_form(PlanUpdateSchema(), _typed(request.form, NUMBERS))
    if errors:
        return _form(plan, errors)
    plans.update_plan(db.session(), name, data)
    flash(f"Saved plan {name}.")
    return redirect(url_for(".plans"), 303)


def _typed(form: Mapping[str, str], fields: tuple[str, ...]) -> dict[str, Any]:
    return forms.typed(form, fields, integers=NUMBERS)


def _form(plan: Plan | None, errors: dict[str, str]) -> ResponseReturnValue:
    """The create (``plan`` None) or edit form: as posted when it comes back with errors (422)."""
    if request.method == "POST":
        values = {field: request.form.get(field, "") for field in ("name", *NUMBERS)}
    elif plan is not None:
        values = {field: "" if getattr(plan, field) is None else str(getattr(plan, field)) for field in NUMBERS}
    else:
        values = {}
    page = render_template("console/plan_form.html", plan=plan, values=values, errors=errors)
    return (page, 422) if errors else page
