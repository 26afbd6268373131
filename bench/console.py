"""The operator console at 10,000 tenants: its overview and tenant list against the admin API's list.

    .venv/bin/python -m bench.console                        # 10,000 tenants, 200 rounds, a scratch database
    .venv/bin/python -m bench.console --tenants 10000 --rounds 300
    .venv/bin/python -m bench.console --database-url postgresql://root@127.0.0.1:5432/bench   # kept, reused
    DATABASE_URL=postgresql://root@127.0.0.1:5432/postgres .venv/bin/python bench/console.py

Issue 22: at 10,000 tenants, the overview and a tenant-list page render server-side in
under 100 ms p50, and no page reads every tenant per request beyond what an index
answers.

The database: with ``--database-url``, that one, kept afterwards: its public schema is
brought to head and it is seeded only up to ``--tenants`` (a second run reuses it);
without, a scratch database (on DATABASE_URL's server, else where the tests would make
one), dropped at the end. The tenants are rows of ``public.tenants`` only, inserted by one
``INSERT … SELECT generate_series`` (a second or so for 10,000): the pages measured
read that table and nothing of a tenant's schema, so no schema is created. They are
spread like a fleet: names and slugs from 26 first words (a search for a word's first
letters matches about 1 in 26), 3% suspended, plans 70/25/5% free/pro/enterprise, 1%
one revision behind and 0.5% with none recorded. Then ``VACUUM ANALYZE public.tenants``,
as autovacuum would have done on a fleet this size (index-only scans need it).

Every request goes through Flask's test client (the WSGI app in this process: routing,
the console's session and CSRF checks or the admin token, the core, the template or
JSON; no network, no gunicorn), one client signed in to the console through its
sign-in form, one carrying the admin token. Sides, in an order that rotates each round
so drift on a shared machine hits all alike, after ``--warmup`` rounds not counted:

- console: ``GET /console/`` (the overview, with ``CONSOLE_COUNTS_TTL_SECONDS=0`` unless
  ``--counts-ttl``: every request counts, the worst case), ``GET /console/tenants``
  (first page), ``?q=ced`` and ``?q=zep`` (prefix searches, each matching 1 in 26 tenants; the
  second's matches all near the end of the slug order), ``?status=suspended``, ``?plan=enterprise``;
- api (the baselines): ``GET /v1/admin/tenants?limit=50`` (the same directory function,
  50 tenants as JSON), ``?behind=true``, ``GET /v1/admin/audit-events?limit=10`` and
  ``/readyz`` (what the overview reads besides the counts).

Prints p50 and p95 per side and the ratio of each p50 to the API list's.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.common

from app import public_migrations
from app.config import sqlalchemy_url
from app.extensions import db
from app.tenancy.migrations import head_revision
from app.testing import ADMIN_TOKEN, make_test_app
from bench.common import scratch_database

#: First words of the seeded names (one per letter): a search for ``ced`` finds the Cedar ones.
WORDS = ("Acme", "Birch", "Cedar", "Delta", "Ember", "Fjord", "Granite", "Harbor", "Iris", "Juniper", "Kestrel",
         "Lumen", "Maple", "Nimbus", "Orchid", "Pioneer", "Quartz", "Raven", "Summit", "Tundra", "Umber", "Vertex",
         "Willow", "Xenon", "Yarrow", "Zephyr")
SECOND = ("Labs", "Logistics", "Health", "Studio", "Foods", "Capital", "Systems", "Works")

CONSOLE = {
    "overview": "/console/",
    "list": "/console/tenants",
    "search": "/console/tenants?q=ced",
    "search z": "/console/tenants?q=zep",
    "status": "/console/tenants?status=suspended",
    "plan": "/console/tenants?plan=enterprise",
}
API = {
    "api list": "/v1/admin/tenants?limit=50",
    "api behind": "/v1/admin/tenants?limit=50&behind=true",
    "api events": "/v1/admin/audit-events?limit=10",
    "readyz": "/readyz",
}
BASELINE = "api list"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


# --- the database ---------------------------------------------------------------------


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """``url`` (SQLAlchemy form, public schema brought to head), or a scratch database dropped afterwards."""
    if url is None:
        with scratch_database() as scratch:
            yield scratch.url
        return
    url = sqlalchemy_url(url)
    app = make_test_app(url)
    with app.app_context():
        public_migrations.upgrade(db.engine)
        db.engine.dispose()
    yield url


def seed(url: str, tenants: int) -> None:
    """Up to ``tenants`` rows in public.tenants (none added when there are enough), then VACUUM ANALYZE."""
    head = head_revision()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        have = conn.execute("SELECT count(*) FROM public.tenants").fetchone()[0]  # type: ignore[index]
        if have >= tenants:
            print(f"  {have:,} tenants already there: not seeding", file=sys.stderr)
            return
        started = time.perf_counter()
        conn.execute(
            """
            INSERT INTO public.tenants (slug, name, schema_name, plan_id, status, schema_revision)
            SELECT lower(w.word) || '_' || lpad(i::text, 6, '0'),
                   w.word || ' ' || (%(second)s::text[])[1 + (i / 26) %% 8] || ' ' || i,
                   't_' || lower(w.word) || '_' || lpad(i::text, 6, '0'),
                   p.id,
                   CASE WHEN i %% 33 = 0 THEN 'suspended' ELSE 'active' END,
                   CASE WHEN i %% 200 = 7 THEN NULL WHEN i %% 100 = 3 THEN 'previous' ELSE %(head)s END
            FROM generate_series(1, %(n)s) AS i
            CROSS JOIN LATERAL (SELECT (%(words)s::text[])[1 + i %% 26] AS word) AS w
            JOIN public.plans AS p ON p.name = CASE WHEN i %% 20 = 0 THEN 'enterprise'
                                                    WHEN i %% 4 = 1 THEN 'pro' ELSE 'free' END
            ON CONFLICT DO NOTHING
            """,
            {"n": tenants, "head": head, "words": list(WORDS), "second": list(SECOND)},
        )
        conn.execute("VACUUM ANALYZE public.tenants")
        have = conn.execute("SELECT count(*) FROM public.tenants").fetchone()[0]  # type: ignore[index]
        print(f"  seeded to {have:,} tenants in {time.perf_counter() - started:.1f}s", file=sys.stderr)


# --- the sides ------------------------------------------------------------------------


class Sides:
    """The console client (signed in) and the admin client, on one app."""

    def __init__(self, url: str, counts_ttl: int) -> None:
        self.app = make_test_app(url, CONSOLE_COUNTS_TTL_SECONDS=counts_ttl)
        self.console = self.app.test_client()
        page = self.console.get("/console/sign-in")
        token = CSRF_FIELD.search(page.get_data(as_text=True))
        if token is None:
            raise RuntimeError("no CSRF token on the sign-in page")
        signed_in = self.console.post("/console/sign-in", data={
            "csrf_token": token.group(1), "operator": "bench", "token": ADMIN_TOKEN})
        if signed_in.status_code != 303:
            raise RuntimeError(f"console sign-in: {signed_in.status_code}")
        self.admin = self.app.test_client()
        self.admin.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {ADMIN_TOKEN}"

    def run(self, side: str) -> float:
        client, path = (self.console, CONSOLE[side]) if side in CONSOLE else (self.admin, API[side])
        started = time.perf_counter()
        response = client.get(path)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.get_data(as_text=True)[:300]}")
        return elapsed

    def close(self) -> None:
        with self.app.app_context():
            db.engine.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(sides: Sides, rounds: int, warmup: int) -> dict[str, list[float]]:
    names = [*CONSOLE, *API]
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + rounds):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            elapsed = sides.run(name)
            if i >= warmup:
                samples[name].append(elapsed)
    return samples


def report(samples: dict[str, list[float]], tenants: int, version: str, rounds: int, counts_ttl: int) -> None:
    base = statistics.median(samples[BASELINE])
    print()
    print(f"PostgreSQL {version}: {tenants:,} tenants, {rounds} rounds, Flask test client, "
          f"CONSOLE_COUNTS_TTL_SECONDS={counts_ttl}")
    print(f"{'side':<12} {'GET':<42} {'p50 ms':>8} {'p95 ms':>8} {'p50 / api list':>15}")
    for name, values in samples.items():
        path = CONSOLE.get(name) or API[name]
        print(f"{name:<12} {path:<42} {statistics.median(values) * 1000:>8.2f} "
              f"{percentile(values, 0.95) * 1000:>8.2f} {statistics.median(values) / base:>14.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000, help="tenants in public.tenants (default 10000)")
    parser.add_argument("--rounds", type=int, default=200, help="timed requests per side (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="rounds first, not counted (default 10)")
    parser.add_argument("--counts-ttl", type=int, default=0,
                        help="CONSOLE_COUNTS_TTL_SECONDS (default 0: the overview counts on every request)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_CONSOLE_DATABASE_URL"),
                        help="a database to use and keep (seeded once); default: a scratch database, dropped")
    args = parser.parse_args()

    with database(args.database_url) as url:
        seed(url, args.tenants)
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            tenants = conn.execute("SELECT count(*) FROM public.tenants").fetchone()[0]  # type: ignore[index]
        sides = Sides(url, args.counts_ttl)
        try:
            samples = measure(sides, args.rounds, args.warmup)
        finally:
            sides.close()
    report(samples, tenants, version.split()[0], args.rounds, args.counts_ttl)


if __name__ == "__main__":
    main()
