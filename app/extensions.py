"""Extension objects, created unbound and initialised in :func:`app.create_app`.

The HTTP layer's ``Api`` object lives in :mod:`app.api`, so that commands which never
serve a request do not import flask-smorest.
"""

from flask_sqlalchemy import SQLAlchemy

from app.models.public import PublicBase

# The mapped classes are plain SQLAlchemy (app.models), so the core does not depend on
# Flask-SQLAlchemy; this object only provides the engine and the request-scoped session.
db = SQLAlchemy(metadata=PublicBase.metadata)


def tenant_roles_active() -> bool:
    """Whether tenants provisioned now get a database role (TENANT_ROLES, decided once per engine)."""
    from flask import current_app

    from app.tenancy import roles

    return roles.active(db.engine, current_app.config["TENANT_ROLES"])
