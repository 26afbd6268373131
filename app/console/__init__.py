"""The operator console: server-rendered pages at /console/, on the same app as the API.

It sits beside :mod:`app.api` (the two never import each other) and calls the same
core functions (:mod:`app.tenancy`) and services, so no rule is implemented twice; its
platform audit events carry the actor ``console:<operator>``.

- ``auth``      sign-in with the admin token, the session cookie, idle expiry, throttling
- ``security``  headers on every console response, static assets with SRI and long caching
- ``pages``     the pages, one module per page family, on one blueprint
- ``errors``    errors and a database outage as readable pages, never a stack trace

``CONSOLE_ENABLED=off`` registers nothing: no route, no session, no CSRF check.
"""

from __future__ import annotations

from flask import Flask

from app.bootstrap import building_for_a_command
from app.config import ConfigError

from .security import BLUEPRINT

__all__ = ["BLUEPRINT", "init_app"]


def init_app(app: Flask) -> None:
    """Register the console on ``app``, unless ``CONSOLE_ENABLED`` is off.

    :raise ConfigError: no ``SECRET_KEY`` in an app that serves requests (embedded mode
        generates one; a ``flask`` command other than ``run`` serves no page and gets no console).
    """
    if not app.config["CONSOLE_ENABLED"]:
        return
    if not app.config.get("SECRET_KEY"):
        if building_for_a_command():
            return
        raise ConfigError(
            "SECRET_KEY must be set when DATABASE_URL is and the console is on: it signs the console's "
            "session cookies. Set it to a long random value (python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'), or turn the console off with CONSOLE_ENABLED=off."
        )
    from . import auth, pages, security

    auth.init_app(app)
    security.init_app(app)
    app.register_blueprint(pages.bp)
