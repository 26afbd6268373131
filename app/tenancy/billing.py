"""The billing outbox: what a billing system needs to know, never lost and never ahead of its change.

**Writing.** :func:`record` inserts one row into ``public.billing_events`` in the
caller's transaction, the one that makes the change (a plan change, a tenant
activated, suspended, resumed or deleted: :mod:`.lifecycle` calls it), so the event
commits with its change or not at all (a transactional outbox). :func:`close_period`
snapshots one month's usage counters into one ``usage.period_closed`` event per tenant;
its idempotency key (``usage.period_closed:<tenant id>:<YYYY-MM>``) is unique, so running
it again, or on every node at once, adds nothing.

**Order.** Every insert first takes one transaction-level advisory lock
(:func:`.locks.lock_billing_outbox`), held until COMMIT: event ids are given out in the order their
transactions commit, so a reader that saw id N never later finds a smaller id committed
after it. That is what makes ``GET /v1/admin/billing-events?after=<id>`` a stream a
poller cannot fall behind in. The price is that billing changes commit one at a time;
they are rare (a plan change, a suspension), and the lock is taken last in each transaction.

**Delivery.** Competing consumers call :func:`claim`: up to ``limit`` events neither
acknowledged nor under a live claim, oldest first, locked with ``FOR UPDATE SKIP
LOCKED`` (two consumers never wait for, nor take, the same rows), marked with a fresh
claim token and a lease. :func:`acknowledge` with that token settles them. A consumer
that dies before acknowledging loses nothing: when the lease runs out the next claim
takes the events again (``attempts`` counts the deliveries). At-least-once: a consumer
deduplicates on ``idempotency_key``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, BindParameter, Connection, Table, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session

from app.models.public import BillingEvent, Plan, Tenant

from . import locks, usage
from .audit import current_actor
from .errors import PeriodStillOpen

PLAN_CHANGED = "tenant.plan_changed"
PERIOD_CLOSED = "usage.period_closed"
#: The status changes a billing system gets, named as the audit trail names them
#: (``tenant.activated``: a pending tenant went live; a tenant made pending again is not billed).
STATUS_EVENTS = frozenset({"tenant.activated", "tenant.suspended", "tenant.resumed"})
DELETED = "tenant.deleted"

#: Most events one claim or one page returns.
MAX_BATCH = 1000
#: Longest lease a claim may ask for, in seconds.
MAX_LEASE_SECONDS = 3600

_TABLE: Table = BillingEvent.__table__  # type: ignore[assignment]  # a Table, typed as FromClause


def record(session: Session, event_type: str, tenant_id: int, tenant_slug: str, data: Mapping[str, Any]) -> None:
    """Add one event to the outbox in the session's transaction (see the module's docstring).

    Call it last in the transaction: the outbox lock it takes is held until COMMIT.
    """
    connection = session.connection()
    locks.lock_billing_outbox(connection)
    connection.execute(insert(_TABLE).values(
        idempotency_key=f"{event_type}:{tenant_id}:{uuid.uuid4()}", type=event_type,
        tenant_id=tenant_id, tenant_slug=tenant_slug, data={**data, "actor": current_actor().label},
    ))


def closable_at(period: date, grace_seconds: int) -> datetime:
    """When ``period`` may be closed: its end plus the grace for the last flushes."""
    return usage.period_end(period) + timedelta(seconds=grace_seconds)


_CLOSE = text(
    "INSERT INTO public.billing_events (idempotency_key, type, tenant_id, tenant_slug, data)"
    f" SELECT r.key, '{PERIOD_CLOSED}', r.tenant_id, r.slug, r.data"
    " FROM jsonb_to_recordset(:rows) AS r(key text, tenant_id bigint, slug text, data jsonb)"
    " ORDER BY r.tenant_id"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
).bindparams(bindparam("rows", type_=JSONB))


@dataclass(frozen=True)
class ClosedPeriod:
    period: date
    created: int  # events added by this call
    existing: int  # tenants whose event an earlier close already wrote


def close_period(session: Session, period: date, grace_seconds: int) -> ClosedPeriod:
    """One ``usage.period_closed`` event per tenant billed for ``period``, in the session's transaction.

    Billed: every tenant created before the month ended and not deleted since, and every
    deleted tenant that has counts in the month (its slug and plan from its
    ``tenant.deleted`` event). The event carries the month's counts as flushed, the plan
    and the status at closing time. Idempotent (see the module's docstring).

    :raise PeriodStillOpen: the month has not ended ``grace_seconds`` ago.
    """
    ready = closable_at(period, grace_seconds)
    if usage.now() < ready:
        raise PeriodStillOpen(usage.format_period(period), ready.isoformat().replace("+00:00", "Z"))
    end = usage.period_end(period)
    label = usage.format_period(period)
    # Three reads, no join across them: on Citus ``tenants`` is a Citus local table and the
    # other two are plain coordinator tables, which one query may not mix.
    billed: dict[int, dict[str, Any]] = {
        row.id: {"slug": row.slug, "plan": row.plan, "status": row.status}
        for row in session.execute(
            select(Tenant.id, Tenant.slug, Tenant.status, Plan.name.label("plan"))
            .join(Plan, Plan.id == Tenant.plan_id).where(Tenant.created_at < end)
        )
    }
    counts: dict[int, dict[str, int]] = {}
    for tenant_id, metric, value in session.execute(
        text("SELECT tenant_id, metric, value FROM public.usage_counters WHERE period = :period ORDER BY metric"),
        {"period": period},
    ):
        counts.setdefault(int(tenant_id), {})[metric] = int(value)
    gone = [tenant_id for tenant_id in counts if tenant_id not in billed]
    if gone:
        for row in session.execute(
            select(BillingEvent.tenant_id, BillingEvent.tenant_slug, BillingEvent.data)
            .where(BillingEvent.type == DELETED, BillingEvent.tenant_id.in_(gone)).order_by(BillingEvent.id)
        ):
            billed[row.tenant_id] = {"slug": row.tenant_slug, "plan": row.data.get("plan"), "status": "deleted"}
        for tenant_id in gone:  # deleted before the outbox existed: no slug or plan to give
            billed.setdefault(tenant_id, {"slug": None, "plan": None, "status": "deleted"})
    actor = current_actor().label
    rows = [{
        "key": f"{PERIOD_CLOSED}:{tenant_id}:{label}", "tenant_id": tenant_id, "slug": facts["slug"],
        "data": {"period": label, "plan": facts["plan"], "status": facts["status"],
                 "metrics": counts.get(tenant_id, {}), "actor": actor},
    } for tenant_id, facts in sorted(billed.items())]
    connection = session.connection()
    locks.lock_billing_outbox(connection)
    # One statement and one parameter (a JSON array the server expands), not a parameter
    # per value: 10,000 tenants are 50,000 values, which the driver would parse into the text.
    created = len(connection.execute(_CLOSE, {"rows": rows}).all()) if rows else 0
    return ClosedPeriod(period, created, len(rows) - created)


@dataclass(frozen=True)
class Event:
    id: int
    idempotency_key: str
    type: str
    tenant_id: int
    tenant_slug: str | None
    occurred_at: datetime
    data: dict[str, Any]
    attempts: int
    acked_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> Event:
        return cls(row.id, row.idempotency_key, row.type, row.tenant_id, row.tenant_slug, row.occurred_at,
                   row.data, row.attempts, row.acked_at)

    def as_dict(self) -> dict[str, Any]:
        """What a consumer is shown of it (the admin API and the CLI): ``acknowledged``, not when."""
        return {"id": self.id, "idempotency_key": self.idempotency_key, "type": self.type,
                "tenant_id": self.tenant_id, "tenant_slug": self.tenant_slug, "occurred_at": self.occurred_at,
                "data": self.data, "attempts": self.attempts, "acknowledged": self.acked_at is not None}


_COLUMNS = (_TABLE.c.id, _TABLE.c.idempotency_key, _TABLE.c.type, _TABLE.c.tenant_id, _TABLE.c.tenant_slug,
            _TABLE.c.occurred_at, _TABLE.c.data, _TABLE.c.attempts, _TABLE.c.acked_at)


def events_after(connection: Connection, after: int, limit: int, tenant_id: int | None = None) -> list[Event]:
    """The events with an id above ``after``, oldest first: the stream a poller reads (acknowledged ones too)."""
    statement = select(*_COLUMNS).where(_TABLE.c.id > after).order_by(_TABLE.c.id).limit(min(limit, MAX_BATCH))
    if tenant_id is not None:
        statement = statement.where(_TABLE.c.tenant_id == tenant_id)
    return [Event.of(row) for row in connection.execute(statement)]


@dataclass(frozen=True)
class Claim:
    token: uuid.UUID
    consumer: str
    claimed_until: datetime | None  # None: nothing was claimed
    events: list[Event]


_CLAIM = text(
    "UPDATE public.billing_events SET claim_token = :token, claimed_by = :consumer,"
    " claimed_until = now() + make_interval(secs => :lease), attempts = attempts + 1"
    " WHERE id IN (SELECT id FROM public.billing_events"
    "              WHERE acked_at IS NULL AND (claimed_until IS NULL OR claimed_until <= now())"
    "              ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)"
    " RETURNING id, idempotency_key, type, tenant_id, tenant_slug, occurred_at, data, attempts, acked_at,"
    " claimed_until"
).columns(data=BillingEvent.data.type)


def claim(connection: Connection, consumer: str, limit: int, lease_seconds: float) -> Claim:
    """Claim up to ``limit`` events for ``consumer`` for ``lease_seconds`` (see the module's docstring).

    Commit the caller's transaction before delivering: the claim holds no lock after that,
    only its lease.
    """
    if not 0 < lease_seconds <= MAX_LEASE_SECONDS:
        raise ValueError(f"a lease is more than 0 and at most {MAX_LEASE_SECONDS} seconds")
    token = uuid.uuid4()
    rows = sorted(connection.execute(_CLAIM, {"token": token, "consumer": consumer, "lease": float(lease_seconds),
                                              "limit": min(limit, MAX_BATCH)}), key=lambda row: row.id)
    return Claim(token, consumer, rows[0].claimed_until if rows else None, [Event.of(row) for row in rows])


@dataclass(frozen=True)
class Acknowledgement:
    acknowledged: list[int]  # settled by this claim (now or by an earlier acknowledgement)
    refused: list[int]  # not this claim's: unknown, never claimed with it, or claimed again by another consumer


def acknowledge(connection: Connection, token: uuid.UUID, ids: Iterable[int]) -> Acknowledgement:
    """Settle the events ``ids`` of the claim ``token``; idempotent, so an acknowledgement may be retried.

    An event whose lease ran out is still settled by its token until another consumer
    claims it: the delivery happened, a second one would only repeat it.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return Acknowledgement([], [])
    ids_param: BindParameter[list[int]] = bindparam(
        "ids", wanted, type_=BigInteger(), expanding=True)  # type: ignore[arg-type]  # each value a bigint
    connection.execute(
        update(_TABLE).where(_TABLE.c.claim_token == token, _TABLE.c.id.in_(ids_param), _TABLE.c.acked_at.is_(None))
        .values(acked_at=text("now()"), claimed_until=None)
    )
    settled = set(connection.scalars(
        select(_TABLE.c.id).where(_TABLE.c.claim_token == token, _TABLE.c.id.in_(ids_param),
                                  _TABLE.c.acked_at.is_not(None))
    ))
    return Acknowledgement([i for i in wanted if i in settled], [i for i in wanted if i not in settled])


@dataclass(frozen=True)
class Backlog:
    unacknowledged: int
    claimed: int  # under a live claim
    oldest: datetime | None  # the oldest unacknowledged event's time


def backlog(connection: Connection) -> Backlog:
    """How much is waiting for a consumer (reads the partial index of unacknowledged events)."""
    row = connection.execute(text(
        "SELECT count(*) AS waiting, count(*) FILTER (WHERE claimed_until > now()) AS claimed,"
        " min(occurred_at) AS oldest FROM public.billing_events WHERE acked_at IS NULL"
    )).one()
    return Backlog(int(row.waiting), int(row.claimed), row.oldest)


def purge(connection: Connection, before: datetime) -> int:
    """Delete acknowledged events written before ``before``; the number deleted.

    Never an unacknowledged one: retention must not lose what no consumer has had.
    """
    return connection.execute(
        _TABLE.delete().where(_TABLE.c.acked_at.is_not(None), _TABLE.c.occurred_at < before)
    ).rowcount
