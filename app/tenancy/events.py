"""Log lines about tenants, written once the transaction that made the change has committed.

A lifecycle change (suspend, resume, delete, ...) runs in its caller's transaction, with
its audit event; a log line written right away would report a change that a failed
COMMIT then undid. :func:`log_on_commit` keeps the line on the session until the root
transaction commits, and drops it when that transaction rolls back. The listeners are
installed with the tenant binding (:func:`app.tenancy.binding.install`), so every
session that can change a tenant has them.

Field names are those of the request log (:mod:`app.logs`): ``event`` (the audit
action, e.g. ``tenant.suspended``), ``tenant`` (the slug); ``request_id`` is added from
the context when there is one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, SessionTransaction

from .audit import current_actor

log = logging.getLogger("app.tenancy")

_PENDING = "tenantry.log_on_commit"
_CALLBACKS = "tenantry.call_on_commit"


def log_on_commit(session: Session, event: str, tenant: str, message: str, **fields: Any) -> None:
    """Log ``message`` (INFO) with ``event``, ``tenant`` and ``fields`` when the session's transaction commits."""
    # The actor (and its request id) is the one of now; the COMMIT may run after it is unbound.
    record = {"event": event, "tenant": tenant, "request_id": current_actor().request_id, **fields}
    session.info.setdefault(_PENDING, []).append((message, record))


def call_on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call ``callback`` once the session's transaction commits; never when it rolls back.

    For effects outside the database that must follow the change, as the log lines do
    (:mod:`.usage` counts a gauge this way).
    """
    session.info.setdefault(_CALLBACKS, []).append(callback)


def _after_commit(session: Session) -> None:
    for message, record in session.info.pop(_PENDING, ()):
        log.info(message, extra=record)
    for callback in session.info.pop(_CALLBACKS, ()):
        callback()


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # after_commit ran first if it committed: what is left was rolled back
        session.info.pop(_PENDING, None)
        session.info.pop(_CALLBACKS, None)


LISTENERS = (("after_commit", _after_commit), ("after_transaction_end", _after_transaction_end))
