"""The app a long-running operator command works in, built without the HTTP layer.

``flask tenants …`` is registered as a plugin command (the ``flask.commands`` entry
point in pyproject.toml), so the ``flask`` CLI finds it without building the app.
The commands decorated here then build it with :func:`app.bootstrap.build_app`: the
same settings from the environment and the same embedded database when ``DATABASE_URL``
is unset, without importing the API, its schemas and its extensions (about 0.3 s of
a fan-out's start-up, which matters next to a few seconds of DDL). It is the factory's
first half, not :func:`app.create_app`: the factory imports the command groups to
register them, so calling it from here would close an import circle.

An app handed over by the caller wins: an active app context, or a ``ScriptInfo``
built around one (``app.test_cli_runner()``). ``--app``/``FLASK_APP`` name only where
``flask`` looks for other commands; these build Tenantry's own app.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any

import click
from flask import current_app
from flask.cli import ScriptInfo


def with_cli_app(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Like :func:`flask.cli.with_appcontext`, with an HTTP-less app when none was handed over."""

    @click.pass_context
    def decorator(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        if current_app:
            return ctx.invoke(fn, *args, **kwargs)
        info = ctx.find_object(ScriptInfo)
        if info is not None and info.create_app is not None:
            app = info.load_app()
        else:
            from ..bootstrap import build_app

            app = build_app()
        with app.app_context():
            return ctx.invoke(fn, *args, **kwargs)

    return update_wrapper(decorator, fn)
