"""The application factory: config, extensions, blueprints, CLI, error handlers.

``create_app()`` is the only entry point: nothing is configured, connected or started
at import time.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from . import config as settings
from . import logs
from .extensions import db

log = logging.getLogger("app")

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None, *, http: bool = True) -> Flask:
    """Build the application.

    ``config`` replaces the environment entirely (tests pass explicit values); without
    it, settings come from environment variables (``app.config``). With no database
    URL, an embedded PostgreSQL is started and migrated (development mode).

    ``http=False`` leaves out the HTTP layer (API, blueprints, request hooks): the
    same settings, database and CLI, for commands that never serve a request
    (``flask tenants migrate`` builds its app so, see :mod:`app.cli_app`), which then
    start in about half the time.
    """
    values = settings.defaults()
    given = settings.from_env() if config is None else config
    values.update(given)
    if "LOG_LEVEL" not in given and _building_for_a_command():
        values["LOG_LEVEL"] = "WARNING"  # a command's output comes first; LOG_LEVEL=INFO brings the rest back
    settings.validate(values)  # combinations, and values given as a mapping: fail before anything starts
    instance = settings.instance_path(values["INSTANCE_PATH"])
    app = Flask("app", instance_path=str(instance))
    app.config.from_mapping(values)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    logs.configure(app.config)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    embedded = not app.config["SQLALCHEMY_DATABASE_URI"]
    if embedded:
        from . import embedded as embedded_pg

        app.config["SQLALCHEMY_DATABASE_URI"] = embedded_pg.start(instance)
    _configure_database(app)
    if http:
        _configure_api(app)
        _configure_requests(app)

    from .cli import db_cli, tenants_cli
    from .cluster_cli import cluster_cli

    app.cli.add_command(db_cli)
    app.cli.add_command(tenants_cli)
    app.cli.add_command(cluster_cli)

    if embedded:
        _prepare_development(app, instance)
        logs.configure(app.config)  # the generated admin token is scrubbed from log lines too
    return app


def _building_for_a_command() -> bool:
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
            },
        },
    )
    db.init_app(app)
    binding.install(db.session)
    with app.app_context():  # logged now; ``auto`` is decided on the first connection
        roles.decide_on_first_connect(db.engine, app.config["TENANT_ROLES"])
        cluster.detect_on_first_connect(db.engine)
        recycling.install(db.engine, app.config["DB_RECYCLE_AFTER_TENANTS"])


def _configure_api(app: Flask) -> None:
    from . import metrics
    from .api import errors, health, ratelimit, rest_api
    from .api import metrics as metrics_api
    from .api.admin import audit as admin_audit
    from .api.admin import cluster as admin_cluster
    from .api.admin import migrations, plans, tenants
    from .api.inputs import AsciiIntegerConverter
    from .api.openapi import ProblemJsonPlugin
    from .api.tenant import account, api_keys, audit, repositories
    from .schemas.problems import ProblemSchema

    app.url_map.converters["int"] = AsciiIntegerConverter  # before any route is registered
    app.config.update(
        API_TITLE="Tenantry",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/v1",
        OPENAPI_JSON_PATH="openapi.json",
    )
    rest_api.ERROR_SCHEMA = ProblemSchema
    # The security schemes, the roles and the problem responses: app.api.openapi.
    rest_api.init_app(app, spec_kwargs={"extra_plugins": [ProblemJsonPlugin()]})
    for blueprint in (
        health.blp, tenants.blp, plans.blp, migrations.blp, admin_audit.blp, admin_cluster.blp,
        account.blp, repositories.blp, api_keys.blp, audit.blp,
    ):
        rest_api.register_blueprint(blueprint)
    if app.config["METRICS_ENABLED"]:
        rest_api.register_blueprint(metrics_api.blp)
        with app.app_context():  # only a process that serves requests is scraped
            metrics.instrument_pool(db.engine)
    errors.register(app)
    ratelimit.init_app(app)


def _configure_requests(app: Flask) -> None:
    from .api.auth import release_tenant, request_id
    from .api.errors import handle_exception
    from .api.inputs import ChunkedBodies, check_request
    from .api.observe import finish, start

    # First in, last out: the measured time covers everything, and the status is the one sent.
    app.before_request(start)
    app.after_request(finish)
    # A body that is not JSON (415) or does not parse (400); NUL characters and unpaired
    # surrogates, which PostgreSQL text cannot hold, anywhere in the input (422).
    app.before_request(check_request)
    # A chunked body is measured like any other: read up to the limit, then given a length.
    app.wsgi_app = ChunkedBodies(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])  # type: ignore[method-assign]

    @app.before_request
    def name_the_request() -> None:
        """Before anything can fail or log: every log line and audit event can name the request."""
        request_id()

    @app.after_request
    def echo_request_id(response):  # type: ignore[no-untyped-def]
        """Every response names its request, so a client's report can be found in the audit trail."""
        response.headers["X-Request-ID"] = request_id()
        return response

    @app.after_request
    def commit_unit_of_work(response):  # type: ignore[no-untyped-def]
        """The request's one transaction: committed when it succeeded, else rolled back.

        Either can fail when the connection died after the view (a terminated backend, a
        failover): the error becomes the response (a lost connection is 503 problem+json),
        and the session lets go of the dead connection without touching it again.
        """
        try:
            if response.status_code >= 400:
                db.session.rollback()
            else:
                db.session.commit()
        except SQLAlchemyError as exc:
            try:
                db.session.rollback()
            except SQLAlchemyError:
                db.session.invalidate()
            return handle_exception(exc)
        return response

    app.teardown_request(release_tenant)


def _prepare_development(app: Flask, instance: Path) -> None:
    """Embedded mode only: migrate the public schema and make sure an admin token exists."""
    from . import public_migrations

    with app.app_context():
        public_migrations.upgrade(db.engine)
    if app.config.get("ADMIN_TOKEN"):
        return
    token_file = instance / "admin_token"
    if token_file.exists():
        app.config["ADMIN_TOKEN"] = token_file.read_text().strip()
        log.info("development admin token: see %s", token_file)
        return
    token = "adm_" + secrets.token_urlsafe(32)
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    app.config["ADMIN_TOKEN"] = token
    print(
        f"\n  Development admin token (shown once, kept in {token_file}):\n    {token}\n",
        file=sys.stderr,
    )
