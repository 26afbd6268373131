"""Closing a month for billing at scale: ``billing.close_period`` against one raw SQL statement.

    flock /tmp/bench.lock .venv/bin/python bench/billing.py                  # 10,000 tenants, 5 rounds
    flock /tmp/bench.lock .venv/bin/python bench/billing.py --tenants 2000 --rounds 3

A scratch database (DATABASE_URL's server, else where the tests would make one) gets the
public migrations and ``--tenants`` rows in ``public.tenants`` (rows only: closing a month
reads no tenant schema) with two usage counters each in every month the run closes.

Each round closes two fresh months, one each way, the order alternating:

- **close_period**: :func:`app.tenancy.billing.close_period` in one transaction, as
  ``flask usage close-period`` runs it (three reads, the outbox lock, batched
  ``INSERT … ON CONFLICT DO NOTHING``), timed from the first read to COMMIT;
- **raw**: the same events written by one ``INSERT … SELECT`` that joins tenants, plans
  and counters in the database (what one statement can do on plain PostgreSQL, not on
  Citus), then COMMIT.

Prints each round, the medians and close_period/raw, and checks both wrote one event per tenant.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import scratch_database  # noqa: E402

_RAW = """
INSERT INTO public.billing_events (idempotency_key, type, tenant_id, tenant_slug, data)
SELECT 'usage.period_closed:' || t.id || ':' || %(label)s, 'usage.period_closed', t.id, t.slug,
       jsonb_build_object('period', %(label)s, 'plan', p.name, 'status', t.status,
                          'metrics', coalesce(u.metrics, '{}'::jsonb), 'actor', 'bench')
FROM public.tenants t JOIN public.plans p ON p.id = t.plan_id
LEFT JOIN (SELECT tenant_id, jsonb_object_agg(metric, value) AS metrics FROM public.usage_counters
           WHERE period = %(period)s GROUP BY tenant_id) u ON u.tenant_id = t.id
WHERE t.created_at < %(end)s
ORDER BY t.id
ON CONFLICT (idempotency_key) DO NOTHING
"""


def month(index: int) -> date:
    return date(2040 + index // 12, index % 12 + 1, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    from app.extensions import db
    from app.tenancy import billing, usage
    from app.testing import make_test_app

    with scratch_database() as scratch:
        periods = [month(i) for i in range(2 * args.rounds)]
        with psycopg.connect(scratch.dsn) as conn:
            conn.execute(
                "INSERT INTO public.tenants (slug, name, schema_name, plan_id, status)"
                " SELECT 'b' || lpad(g::text, 6, '0'), 'bench', 't_b' || lpad(g::text, 6, '0'),"
                " (SELECT id FROM public.plans WHERE name = 'pro'), 'active' FROM generate_series(1, %s) g",
                (args.tenants,))
            for period in periods:
                conn.execute(
                    "INSERT INTO public.usage_counters (tenant_id, metric, period, value)"
                    " SELECT id, metric, %s, (random() * 10000)::int FROM public.tenants,"
                    " unnest(ARRAY['api_requests', 'repositories']) metric", (period,))
            conn.execute("ANALYZE")
        print(f"PostgreSQL {scratch.version}; {args.tenants} tenants, 2 counters each per month, "
              f"{args.rounds} rounds")

        app = make_test_app(scratch.url)
        # Every month the run closes ended long ago (the grace is 0 here anyway).
        usage.now = lambda: datetime(2099, 1, 1, tzinfo=UTC)  # type: ignore[assignment]

        def close(period: date) -> float:
            with app.app_context():
                session = db.session()
                began = time.perf_counter()
                closed = billing.close_period(session, period, 0)
                session.commit()
                elapsed = time.perf_counter() - began
                db.session.remove()
            assert closed.created == args.tenants, closed
            return elapsed

        def raw(period: date) -> float:
            label = usage.format_period(period)
            with psycopg.connect(scratch.dsn) as conn:
                began = time.perf_counter()
                cursor = conn.execute(_RAW, {"label": label, "period": period,
                                             "end": usage.period_start(usage.next_period(period))})
                conn.commit()
                elapsed = time.perf_counter() - began
            assert cursor.rowcount == args.tenants, cursor.rowcount
            return elapsed

        timings: dict[str, list[float]] = {"close_period": [], "raw": []}
        for index in range(args.rounds):
            sides = [("close_period", close), ("raw", raw)]
            if index % 2:
                sides.reverse()
            line = []
            for offset, (name, run) in enumerate(sides):
                seconds = run(periods[2 * index + offset])
                timings[name].append(seconds)
                line.append(f"{name} {seconds * 1000:.0f} ms")
            print(f"round {index + 1}: " + ", ".join(line))
        with app.app_context():
            db.engine.dispose()
        ours, baseline = statistics.median(timings["close_period"]), statistics.median(timings["raw"])
        print(f"median: close_period {ours * 1000:.0f} ms, raw INSERT ... SELECT {baseline * 1000:.0f} ms; "
              f"close_period/raw {ours / baseline:.2f}x; {args.tenants / ours:,.0f} tenants/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
