"""What every Tenantry app starts from: settings, logging and the database, nothing of HTTP or the CLI.

:func:`app.create_app` builds on this and adds the API and the command groups. The
``flask tenants`` commands build only this (:mod:`app.cli.app`): a fan-out needs the
database, not the API's import time.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from . import config as settings
from . import logs
from .extensions import db

__all__ = ["build_app", "building_for_a_command"]

log = logging.getLogger("app")


class _OrderedJSON(DefaultJSONProvider):
    sort_keys = False  # responses keep the order their schema gives, not alphabetical


def build_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application's core: settings, logging and the database.

    ``config`` replaces the environment entirely (tests pass explicit values); without
    it, settings come from environment variables (``app.config``). With no database
    URL, an embedded PostgreSQL is started, the public schema migrated and an admin
    token made (development mode).
    """
    values = settings.defaults()
    given = settings.from_env() if config is None else config
    values.update(given)
    if "LOG_LEVEL" not in given and building_for_a_command():
        values["LOG_LEVEL"] = "WARNING"  # a command's output comes first; LOG_LEVEL=INFO brings the rest back
    settings.validate(values)  # combinations, and values given as a mapping: fail before anything starts
    instance = settings.instance_path(values["INSTANCE_PATH"])
    app = Flask("app", instance_path=str(instance))
    app.config.from_mapping(values)
    app.json = _OrderedJSON(app)
    logs.configure(app.config)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    embedded = not app.config["SQLALCHEMY_DATABASE_URI"]
    if embedded:
        from . import embedded as embedded_pg

        app.config["SQLALCHEMY_DATABASE_URI"] = embedded_pg.start(instance)
    _configure_database(app)
    if embedded:
        _prepare_development(app, instance)
        logs.configure(app.config)  # the generated admin token is scrubbed from log lines too
    return app


def building_for_a_command() -> bool:
    """Whether a ``flask`` command other than ``run`` (the development server) builds the app.

    Such a command prints what it did; log lines at INFO (the role layer's decision,
    Alembic's steps) would come before that output on every call. The click context
    tells: gunicorn and other WSGI servers import the app outside of one.
    """
    import click

    context = click.get_current_context(silent=True)
    return context is not None and context.info_name != "run"


def _configure_database(app: Flask) -> None:
    from .tenancy import binding, cluster, recycling, roles

    app.config["SQLALCHEMY_DATABASE_URI"] = settings.sqlalchemy_url(
        app.config["SQLALCHEMY_DATABASE_URI"]
    )
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS",
        {
            "pool_pre_ping": True,
            "pool_size": app.config["DB_POOL_SIZE"],
            "max_overflow": app.config["DB_MAX_OVERFLOW"],
            "pool_timeout": app.config["DB_POOL_TIMEOUT"],
            "pool_recycle": app.config["DB_POOL_RECYCLE"],
            "connect_args": {
                "application_name": "tenantry",
                "prepare_threshold": app.config["DB_PREPARE_THRESHOLD"],
                # psycopg's default is 130 s, past gunicorn's worker timeout.
                "connect_timeout": app.config["DB_CONNECT_TIMEOUT"],
            },
        },
    )
    db.init_app(app)
    binding.install(db.session)
    with app.app_context():  # logged now; ``auto`` is decided on the first connection
        roles.decide_on_first_connect(db.engine, app.config["TENANT_ROLES"])
        cluster.detect_on_first_connect(db.engine)
        recycling.install(db.engine, app.config["DB_RECYCLE_AFTER_TENANTS"])


def _prepare_development(app: Flask, instance: Path) -> None:
    """Embedded mode only: migrate the public schema, make sure an admin token and a secret key exist."""
    from . import public_migrations

    with app.app_context():
        public_migrations.upgrade(db.engine)
    if not app.config.get("SECRET_KEY"):
        # The console's session cookies are signed with it: kept, so a restart keeps operators signed in.
        app.config["SECRET_KEY"] = _kept_secret(instance / "secret_key", secrets.token_urlsafe(48))
    if app.config.get("ADMIN_TOKEN"):
        return
    token_file = instance / "admin_token"
    if token_file.exists():
        app.config["ADMIN_TOKEN"] = token_file.read_text().strip()
        log.info("development admin token: see %s", token_file)
        return
    token = _kept_secret(token_file, "adm_" + secrets.token_urlsafe(32))
    app.config["ADMIN_TOKEN"] = token
    print(
        f"\n  Development admin token (shown once, kept in {token_file}):\n    {token}\n",
        file=sys.stderr,
    )


def _kept_secret(path: Path, new: str) -> str:
    """The secret kept in ``path`` (owner-only), written there first when there is none."""
    if path.exists():
        return path.read_text().strip()
    path.touch(mode=0o600)
    path.write_text(new + "\n")
    return new
