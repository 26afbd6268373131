"""``flask usage close-period`` and ``flask billing events|backlog|purge``: the billing outbox from a terminal.

What the outbox holds and how consumers take it: :mod:`app.tenancy.billing` and docs/billing.md.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import current_app

from ..extensions import db
from ..tenancy import audit, billing, usage
from .errors import CommandGroup, domain_errors
from .render import echo_rows

usage_cli = CommandGroup("usage", help="Metered usage: closing a month for billing.")
billing_cli = CommandGroup("billing", help="The billing outbox (public.billing_events).")


@usage_cli.command("close-period")
@click.argument("period", metavar="YYYY-MM")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def close_period(period: str, as_json: bool) -> None:
    """Write one usage.period_closed event per tenant billed for the month PERIOD (UTC), in one transaction.

    Idempotent: a second run, or one on another node at the same time, writes nothing
    more. Refused until USAGE_CLOSE_GRACE_SECONDS after the month ended.
    """
    month = usage.parse_period(period, "PERIOD")
    _flush_shared_usage()
    session = db.session()
    try:
        with audit.acting_as(audit.cli_actor()):
            closed = billing.close_period(session, month, current_app.config["USAGE_CLOSE_GRACE_SECONDS"])
        session.commit()
    except BaseException:
        session.rollback()
        raise
    if as_json:
        click.echo(json.dumps({"period": period, "created": closed.created, "existing": closed.existing}))
        return
    click.echo(f"closed {period}: {closed.created} events written, {closed.existing} already written before")


def _flush_shared_usage() -> None:
    """With ``USAGE_STORAGE_URI`` a Redis: write the totals it holds and PostgreSQL lacks, first.

    Server processes do it every flush interval, but a month may be closed while none
    runs. A Redis that does not answer refuses the close (exit 1): its totals could be
    the month's last counts, and a closed month is not written again.
    """
    config = current_app.config
    shared = usage.shared_store(config["USAGE_STORAGE_URI"], config["USAGE_KEY_PREFIX"])
    if shared is None:
        return
    try:
        if usage.flush_shared(shared, db.engine) is None:
            click.echo("error: USAGE_STORAGE_URI does not answer: the month's last counts may be there; "
                       "nothing was closed, try again once it answers", err=True)
            sys.exit(1)
    finally:
        shared.close()


def _row(event: billing.Event) -> dict[str, Any]:
    return {**event.as_dict(), "occurred_at": event.occurred_at.isoformat()}


@billing_cli.command("events")
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True,
              help="Only events with a larger id.")
@click.option("--limit", type=click.IntRange(1, billing.MAX_BATCH), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one JSON list).")
def billing_events(after: int, limit: int, as_json: bool) -> None:
    """The outbox's events after --after, oldest first, acknowledged or not."""
    rows = [_row(e) for e in billing.events_after(db.session().connection(), after, limit)]

    def line(row: dict[str, Any]) -> str:
        state = "acked" if row["acknowledged"] else f"waiting ({row['attempts']} claims)"
        return (f"{row['id']:>8} {row['occurred_at'][:19]} {row['type']:<22} "
                f"{row['tenant_slug'] or row['tenant_id']!s:<24} {state}")

    echo_rows(rows, as_json, line, empty=f"no events after {after}")


@billing_cli.command("backlog")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def billing_backlog(as_json: bool) -> None:
    """How many events wait for a consumer, how many are claimed, and the oldest one's time."""
    waiting = billing.backlog(db.session().connection())
    oldest = waiting.oldest.isoformat() if waiting.oldest else None
    if as_json:
        click.echo(json.dumps({"unacknowledged": waiting.unacknowledged, "claimed": waiting.claimed,
                               "oldest": oldest}))
        return
    click.echo(f"{waiting.unacknowledged} unacknowledged ({waiting.claimed} under a claim), oldest: {oldest or '-'}")


@billing_cli.command("purge")
@click.option("--older-than", "days", type=click.IntRange(min=31), required=True, metavar="DAYS",
              help="Delete acknowledged events written more than DAYS days ago (at least 31).")
def billing_purge(days: int) -> None:
    """Delete acknowledged events older than DAYS days; unacknowledged ones are always kept."""
    session = db.session()
    with session.begin():
        deleted = billing.purge(session.connection(), datetime.now(UTC) - timedelta(days=days))
    click.echo(f"deleted {deleted} acknowledged billing events older than {days} days")
