"""The console's pages: each reads its arguments, calls the core once or a few times, renders.

Reads go through the same functions as the admin API (:mod:`app.tenancy.directory`,
:mod:`app.tenancy.ledger`, :mod:`app.tenancy.audit`); suspend and resume through
:func:`app.tenancy.lifecycle.update_tenant`, which the admin API's PATCH calls too,
so the lock, the validation and the audit event are the same, with the actor
``console:<operator>``. The request's unit of work is the app's: committed after a
response below 400 (a redirect after a change), rolled back otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, NotFound

from app import public_migrations
from app.extensions import db
from app.models.public import TENANT_STATUSES, MigrationRun, PlatformAuditEvent
from app.services import plans
from app.tenancy import api_keys, audit, directory, ledger, lifecycle
from app.tenancy.migrations import head_revision

from . import auth, errors, security
from .security import BLUEPRINT


class ConsoleBlueprint(Blueprint):
    """A blueprint whose static files are cached for a year (their URLs carry their hash)."""

    def get_send_file_max_age(self, filename: str | None) -> int | None:
        return security.STATIC_MAX_AGE


bp = ConsoleBlueprint(BLUEPRINT, __name__, url_prefix="/console", template_folder="templates",
                      static_folder="static", static_url_path="/static")

#: Endpoints reachable without a session.
PUBLIC = frozenset({f"{BLUEPRINT}.sign_in", f"{BLUEPRINT}.static"})
PAGE_SIZE = 50
RECENT_EVENTS = 10
#: Longest search prefix accepted (tenant names are at most 200 characters).
SEARCH_MAX = 200


@bp.before_request
def check_csrf() -> None:
    """Every POST of the console carries the session's CSRF token (400 otherwise, nothing changed)."""
    auth.csrf.protect()


@bp.before_request
def require_operator() -> ResponseReturnValue | None:
    """A signed-in operator, else a redirect to the sign-in page (back here afterwards)."""
    if request.endpoint in PUBLIC:
        return None
    operator = auth.current_operator()
    if operator is None:
        auth.sign_out()
        return redirect(url_for(".sign_in", next=request.full_path.rstrip("?") if request.method == "GET" else None))
    auth.act_as(operator)
    return None


bp.teardown_request(auth.release_operator)
errors.register(bp)


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> ResponseReturnValue:
    target = _local_target(request.values.get("next"))
    if request.method == "GET":
        return render_template("console/sign_in.html", next=target, operator="",
                               signed_out="signed_out" in request.args)
    operator = request.form.get("operator", "").strip()
    try:
        auth.sign_in(operator, request.form.get("token", ""))
    except auth.SignInRefused as refused:
        return render_template("console/sign_in.html", next=target, operator=operator,
                               error=str(refused)), refused.status
    return redirect(target or url_for(".overview"), 303)


@bp.post("/sign-out")
def sign_out() -> ResponseReturnValue:
    auth.sign_out()
    return redirect(url_for(".sign_in", signed_out=1), 303)


@dataclass(frozen=True)
class Overview:
    by_status: dict[str, int]
    by_plan: dict[str, int]
    tenant_head: str
    behind: int
    last_run: MigrationRun | None
    public_revision: str | None
    public_head: str | None
    pool_in_use: int | None
    pool_size: int | None
    events: list[PlatformAuditEvent]

    @property
    def tenants(self) -> int:
        return sum(self.by_status.values())


@bp.get("/")
def overview() -> ResponseReturnValue:
    session = db.session()
    head = head_revision(current_app.config["TENANT_MIGRATIONS_LOCATION"])
    runs = ledger.list_runs(session, limit=1).items
    pool: Any = db.engine.pool
    data = Overview(
        by_status=directory.count_by_status(session),
        by_plan=directory.count_by_plan(session),
        tenant_head=head,
        behind=directory.count_behind(session, head),
        last_run=runs[0] if runs else None,
        public_revision=public_migrations.current_revision(session.connection()),
        public_head=public_migrations.head_revision(),
        pool_in_use=pool.checkedout() if hasattr(pool, "checkedout") else None,
        pool_size=pool.size() if hasattr(pool, "size") else None,
        events=list(audit.list_events(session, platform=True, limit=RECENT_EVENTS).items),
    )
    return render_template("console/overview.html", data=data, now=datetime.now(UTC))


@bp.get("/tenants")
def tenants() -> ResponseReturnValue:
    session = db.session()
    search = request.args.get("q", "").strip()
    status = request.args.get("status") or None
    plan = request.args.get("plan") or None
    if len(search) > SEARCH_MAX:
        raise BadRequest(f"Search for at most {SEARCH_MAX} characters.")
    if status is not None and status not in TENANT_STATUSES:
        raise BadRequest(f"Status is one of {', '.join(TENANT_STATUSES)}.")
    page = directory.list_tenants(session, limit=PAGE_SIZE, cursor=request.args.get("cursor") or None,
                                  prefix=search or None, status=status, plan=plan)
    plan_names = [p.name for p in plans.list_plans(session)]
    return render_template("console/tenants.html", page=page, search=search, status=status, plan=plan,
                           statuses=TENANT_STATUSES, plans=plan_names)


@bp.get("/tenants/<slug>")
def tenant(slug: str) -> ResponseReturnValue:
    session = db.session()
    found = directory.get_tenant(session, slug)
    keys = api_keys.list_api_keys(session, found.id, limit=100)
    events = audit.list_events(session, platform=True, tenant=slug, limit=20).items
    return render_template("console/tenant.html", tenant=found, keys=keys, events=events)


#: The status each action sets, and how the confirmation page words it.
ACTIONS = {"suspend": ("suspended", "Suspend"), "resume": ("active", "Resume")}


@bp.get("/tenants/<slug>/<any(suspend, resume):action>")
def confirm_status(slug: str, action: str) -> ResponseReturnValue:
    """The confirmation page: the change is made only by its POST form (CSRF-protected)."""
    found = directory.get_tenant(db.session(), slug)
    return render_template("console/confirm_status.html", tenant=found, action=action, verb=ACTIONS[action][1])


@bp.post("/tenants/<slug>/<any(suspend, resume):action>")
def change_status(slug: str, action: str) -> ResponseReturnValue:
    status, verb = ACTIONS[action]
    lifecycle.update_tenant(db.session(), slug, status=status)
    flash(f"{verb}d {slug}." if verb.endswith("e") else f"{verb}ed {slug}.")
    return redirect(url_for(".tenant", slug=slug), 303)


@bp.route("/<path:anything>", methods=["GET", "POST"])
def unknown(anything: str) -> ResponseReturnValue:
    """Any other path under /console/: the console's 404 page (with its headers), not the API's JSON."""
    raise NotFound("No console page here.")


def _local_target(target: str | None) -> str | None:
    """``target`` when it is a path of the console (where sign-in may send the operator back), else None."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(security.PREFIX) or "\\" in target:
        return None
    return target
