"""Sign-in (the admin token exchanged for a session cookie) and sign-out."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from .. import auth
from .blueprint import bp, local_target


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> ResponseReturnValue:
    target = local_target(request.values.get("next"))
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
