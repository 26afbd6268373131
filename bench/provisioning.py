"""Onboarding latency: provision_tenant() and POST /v1/admin/tenants against the same DDL sent raw.

    .venv/bin/python bench/provisioning.py                                     # 10,1000 tenants, 40 samples
    .venv/bin/python bench/provisioning.py --tenants 10,1000,10000
    DATABASE_URL=postgresql://root@127.0.0.1:5432/postgres .venv/bin/python bench/provisioning.py

A scratch database (on DATABASE_URL's server, else where the tests would make one:
TEST_DATABASE_URL, Docker, or a throwaway embedded server) gets the public migrations;
then, for each --tenants level, enough tenants are provisioned in the background (a
few processes) for the database to hold that many, and three sides onboard
--samples tenants each, in alternating order so drift on a shared machine hits all
alike:

- raw: what PostgreSQL itself needs, over one psycopg connection: one transaction
  holding CREATE SCHEMA, the search_path and the tenant stream's DDL from base to head
  (Alembic's offline rendering of the migrations: the catalog they produce, and the
  statements the service's fast path sends), then COMMIT. On plain PostgreSQL the
  statements go as one message (the least the server needs); on Citus, which refuses
  DDL sent that way, pipelined one per message (app.tenancy.pipeline);
- service: :func:`app.tenancy.provisioning.provision_tenant` in this process (advisory
  lock, checks, the DDL, the tenants row, the first API key, the audit event, COMMIT);
- http: ``POST /v1/admin/tenants`` through the WSGI app (Flask test client: routing,
  admin authentication, validation, the service, the JSON response; no network).

Prints p50 and p95 per side and level and the ratio of medians to raw; writes
docs/img/provisioning.png when matplotlib is importable (no project dependency:
``.venv/bin/pip install matplotlib``), and drops the scratch database.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.common

from app.extensions import db
from app.tenancy import pipeline
from app.tenancy.migrations import head_revision, rendered_path
from app.tenancy.provisioning import provision_tenant
from app.testing import ADMIN_TOKEN, make_test_app
from bench.common import add_common_arguments, provision_tenants, pyplot, report_plot, save_figure, scratch_database

SIDES = ("raw", "service", "http")

# --- background tenants --------------------------------------------------------------

def fill_to(url: str, dsn: str, level: int, processes: int) -> None:
    with psycopg.connect(dsn) as conn:
        have = conn.execute("SELECT count(*) FROM public.tenants").fetchone()[0]  # type: ignore[index]
    provision_tenants(url, [f"bg{i:06d}" for i in range(have, level)], processes)


# --- the three sides -----------------------------------------------------------------


class Sides:
    def __init__(self, url: str, dsn: str, level: int) -> None:
        self.level = level
        self.app = make_test_app(url)
        self.client = self.app.test_client()
        self.conn = psycopg.connect(dsn)
        self.rendered = rendered_path(None, head_revision())
        if self.rendered is None:
            raise RuntimeError("the tenant stream does not render offline: no fast path, no raw baseline")
        self.counter = 0
        self.citus = self.conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'citus'").fetchone()[0] > 0

    def close(self) -> None:
        self.conn.close()
        with self.app.app_context():
            db.engine.dispose()

    def _slug(self, side: str) -> str:
        self.counter += 1
        return f"{side[0]}{self.level}x{self.counter:06d}"  # unique per level and side

    def run(self, side: str) -> float:
        slug = self._slug(side)
        started = time.perf_counter()
        if side == "raw":
            statements = [f'CREATE SCHEMA "t_{slug}"', f"SELECT set_config('search_path', '\"t_{slug}\"', true)",
                          *self.rendered]
            with self.conn.transaction():  # one message; on Citus one statement a message, pipelined
                pipeline.execute(self.conn, statements, pipelined=self.citus)
        elif side == "service":
            with self.app.app_context():
                provision_tenant(db.session(), slug=slug, name=slug)
                db.session.remove()
        else:
            response = self.client.post(
                "/v1/admin/tenants", json={"slug": slug, "name": slug},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            if response.status_code != 201:
                raise RuntimeError(f"POST /v1/admin/tenants: {response.status_code} {response.get_data(as_text=True)}")
        return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def plot(path: Path, title: str, results: dict[int, dict[str, list[float]]]) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    levels = sorted(results)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.27
    colors = {"raw": "tab:gray", "service": "tab:blue", "http": "tab:orange"}
    labels = {"raw": "raw DDL (psycopg)", "service": "provision_tenant()", "http": "POST /v1/admin/tenants"}
    for i, side in enumerate(SIDES):
        xs = [x + (i - 1) * width for x in range(len(levels))]
        p50 = [statistics.median(results[level][side]) * 1000 for level in levels]
        p95 = [percentile(results[level][side], 0.95) * 1000 for level in levels]
        ax.bar(xs, p50, width, label=labels[side], color=colors[side])
        ax.plot(xs, p95, "k_", markersize=12)
        if side != "raw":
            for x, level, value in zip(xs, levels, p50, strict=True):
                ratio = value / (statistics.median(results[level]["raw"]) * 1000)
                ax.annotate(f"{ratio:.2f}x", (x, value), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(levels)), [f"{level:,} tenants" for level in levels])
    ax.set_ylabel("ms per onboarding (bars p50, ticks p95)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", default="10,1000", help="comma-separated tenant counts (default 10,1000)")
    parser.add_argument("--samples", type=int, default=40, help="onboardings per side and level (default 40)")
    parser.add_argument("--processes", type=int, default=3, help="background provisioning processes (default 3)")
    add_common_arguments(parser, "provisioning.png", provision_processes=False)
    args = parser.parse_args()
    levels = sorted(int(t) for t in args.tenants.split(",") if t.strip())

    results: dict[int, dict[str, list[float]]] = {}
    with scratch_database() as scratch:
        url, dsn, version = scratch.url, scratch.dsn, scratch.version
        print(f"PostgreSQL {version}; levels {levels}, {args.samples} samples per side", file=sys.stderr)
        for level in levels:
            fill_to(url, dsn, level, args.processes)
            sides = Sides(url, dsn, level)
            try:
                for side in SIDES:  # warm-up: first-use costs (imports, rendering, plans) off the record
                    sides.run(side)
                samples: dict[str, list[float]] = {side: [] for side in SIDES}
                for i in range(args.samples):
                    order = SIDES[i % 3:] + SIDES[: i % 3]
                    for side in order:
                        samples[side].append(sides.run(side))
            finally:
                sides.close()
            results[level] = samples
            raw = statistics.median(samples["raw"])
            print(f"  {level:,} tenants: " + ", ".join(
                f"{side} {statistics.median(samples[side]) * 1000:.1f} ms" for side in SIDES
            ) + f" (service/raw {statistics.median(samples['service']) / raw:.2f}x)", file=sys.stderr)

    print()
    print(f"PostgreSQL {version}: onboarding one tenant (schema at {head_revision()}), "
          f"{args.samples} samples per side and level")
    print(f"{'tenants':>8} {'side':<24} {'p50 ms':>8} {'p95 ms':>8} {'p50 / raw':>10}")
    names = {"raw": "raw DDL (psycopg)", "service": "provision_tenant()", "http": "POST /v1/admin/tenants"}
    for level in levels:
        raw = statistics.median(results[level]["raw"])
        for side in SIDES:
            values = results[level][side]
            print(f"{level:>8} {names[side]:<24} {statistics.median(values) * 1000:>8.2f}"
                  f" {percentile(values, 0.95) * 1000:>8.2f} {statistics.median(values) / raw:>9.2f}x")
    if not args.no_plot:
        title = f"Onboarding vs raw DDL, PostgreSQL {version.split()[0]}, {args.samples} samples per side"
        report_plot(plot(args.plot, title, results), args.plot)


if __name__ == "__main__":
    main()
