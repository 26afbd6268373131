"""The console's blueprint: every page needs a signed-in operator, every POST a CSRF token."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, redirect, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from .. import auth, errors, security
from ..security import BLUEPRINT


class ConsoleBlueprint(Blueprint):
    """A blueprint whose static files are cached for a year (their URLs carry their hash)."""

    def get_send_file_max_age(self, filename: str | None) -> int | None:
        return security.STATIC_MAX_AGE


bp = ConsoleBlueprint(BLUEPRINT, "app.console", url_prefix="/console", template_folder="templates",
                      static_folder="static", static_url_path="/static")

#: Sent by console.js when it polls: such a request is not the operator's activity (see auth.act_as).
POLL_HEADER = "X-Console-Poll"

#: Endpoints reachable without a session.
PUBLIC = frozenset({f"{BLUEPRINT}.sign_in", f"{BLUEPRINT}.static"})


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
    auth.act_as(operator, active=request.headers.get(POLL_HEADER) != "1")
    return None


bp.teardown_request(auth.release_operator)
errors.register(bp)


@bp.route("/<path:anything>", methods=["GET", "POST"])
def unknown(anything: str) -> ResponseReturnValue:
    """Any other path under /console/: the console's 404 page (with its headers), not the API's JSON."""
    raise NotFound("No console page here.")


def local_target(target: str | None) -> str | None:
    """``target`` when it is a path of the console (where sign-in may send the operator back), else None."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(security.PREFIX) or "\\" in target:
        return None
    return target
