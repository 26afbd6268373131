"""The application factory: the app of :mod:`app.bootstrap`, plus blueprints, error handlers and CLI.

``create_app()`` is the entry point: nothing is configured, connected or started at
import time. This module sits above the interfaces (:mod:`app.api`, :mod:`app.console`, :mod:`app.cli`)
and wires them in; neither imports it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from sqlalchemy.exc import SQLAlchemyError

from .bootstrap import build_app
from .extensions import db

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None, *, http: bool = True) -> Flask:
    """Build the application.

    ``config`` replaces the environment entirely (tests pass explicit values); without
    it, settings come from environment variables (``app.config``). With no database
    URL, an embedded PostgreSQL is started and migrated (development mode): see
    :func:`app.bootstrap.build_app`, which does all that.

    ``http=False`` leaves out the HTTP layer (API, blueprints, request hooks): the
    same settings, database and CLI, for a process that never serves a request. The
    ``flask tenants`` commands build :func:`~app.bootstrap.build_app`'s app instead
    (see :mod:`app.cli.app`), which starts in about half the time.
    """
    app = build_app(config)
    if http:
        _configure_api(app)
        _configure_requests(app)
        _configure_console(app)
        _trust_proxies(app)

    from .cli.billing import billing_cli, usage_cli
    from .cli.cluster import cluster_cli
    from .cli.db import db_cli
    from .cli.github import github_cli
    from .cli.tenants import tenants_cli

    app.cli.add_command(db_cli)
    app.cli.add_command(tenants_cli)
    app.cli.add_command(cluster_cli)
    app.cli.add_command(github_cli)
    app.cli.add_command(usage_cli)
    app.cli.add_command(billing_cli)
    return app


def _configure_api(app: Flask) -> None:
    from . import metrics
    from .api import errors, health, ratelimit, rest_api
    from .api import metrics as metrics_api
    from .api.admin import audit as admin_audit
    from .api.admin import billing as admin_billing
    from .api.admin import cluster as admin_cluster
    from .api.admin import migrations, plans, tenants
    from .api.admin import usage as admin_usage
    from .api.inputs import AsciiIntegerConverter
    from .api.openapi import ProblemJsonPlugin
    from .api.tenant import account, api_keys, audit, members, repositories
    from .api.tenant import usage as tenant_usage
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
        health.blp, tenants.blp, plans.blp, migrations.blp, admin_audit.blp, admin_cluster.blp, admin_usage.blp,
        admin_billing.blp,
        account.blp, repositories.blp, api_keys.blp, audit.blp, members.blp, members.invitations_blp,
        tenant_usage.blp,
    ):
        rest_api.register_blueprint(blueprint)
    if app.config["GITHUB_WEBHOOK_SECRET"]:  # else no such route, and none in the document
        from .api import webhooks
        from .api.inputs import accept_raw_bodies

        rest_api.register_blueprint(webhooks.blp)
        accept_raw_bodies(app, webhooks.blp.name)
    if app.config["METRICS_ENABLED"]:
        rest_api.register_blueprint(metrics_api.blp)
        with app.app_context():  # only a process that serves requests is scraped
            metrics.instrument_pool(db.engine)
    errors.register(app)
    ratelimit.init_app(app)


def _trust_proxies(app: Flask) -> None:
    """Behind ``TRUSTED_PROXY_COUNT`` proxies, the client's address is read from X-Forwarded-For.

    werkzeug's ``ProxyFix`` sets ``REMOTE_ADDR`` (``request.remote_addr``: what the console's
    sign-in throttle counts, and logs) to the entry that many from the right of the header,
    the one the outermost trusted proxy appended. What a client writes there itself
    sits further left and is never read: a client cannot pick its address, and so
    cannot step out of the throttle, by sending the header. 0 (direct exposure, the
    default) leaves the app as it was: the header is ignored.

    Only ``x_for``. The scheme (X-Forwarded-Proto, for ``request.is_secure`` and the
    console cookie's ``Secure``) is already gunicorn's to trust, from the addresses in
    ``FORWARDED_ALLOW_IPS`` (gunicorn.conf.py): trusting it here as well would make two
    settings answer one question, and the looser one win. Host, port and prefix are
    not forwarded by deploy/nginx.conf, so nothing here reads them.

    Outermost: every layer below, the request-size guard included, sees the client.
    """
    hops = app.config["TRUSTED_PROXY_COUNT"]
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=0)  # type: ignore[method-assign]


def _configure_console(app: Flask) -> None:
    """The operator console (CONSOLE_ENABLED): HTML forms, so the API's JSON-body rule skips it."""
    from . import console
    from .api.inputs import accept_forms

    console.init_app(app)
    accept_forms(app, console.BLUEPRINT)


def _configure_requests(app: Flask) -> None:
    from .api import metering
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
    def echo_request_id(response: Response) -> Response:
        """Every response names its request, so a client's report can be found in the audit trail."""
        response.headers["X-Request-ID"] = request_id()
        return response

    @app.after_request
    def commit_unit_of_work(response: Response) -> Response:
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
                db.session().invalidate()
            return handle_exception(exc)
        return response

    app.teardown_request(release_tenant)
    metering.init_app(app)
