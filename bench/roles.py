"""The cost of a database role per tenant, against the same work without roles, in the same run.

    .venv/bin/python bench/roles.py                       # embedded server (or TEST_DATABASE_URL)
    DATABASE_URL=postgresql://root@127.0.0.1:5432/postgres .venv/bin/python bench/roles.py --tenants 1000,10000

In a scratch database, N tenant roles are created the way provisioning creates them
(NOLOGIN, granted to the login user; WITH INHERIT FALSE, SET TRUE from PostgreSQL 16),
each owning a small schema. Then, per N:

- **per-transaction overhead**: one connection runs ``BEGIN; set_config(search_path);
  SELECT … FROM repositories; COMMIT`` against random tenants, with ``set_config('role',
  …)`` in the same statement, and against twin schemas without roles (alternating
  blocks); median µs per transaction and the ratio;
- **post-GRANT stall**: K idle connections have each taken a tenant role once (their
  membership cache is warm); another session creates one more role and GRANTs it (what
  every provisioning does); then each idle connection's next ``set_config('role')``
  transaction is timed. PostgreSQL 15/16 throw the membership cache away on every
  GRANT and rebuild it on the next role check, which grows with the number of roles.
- **provisioning DDL**: CREATE SCHEMA + a table, with and without CREATE ROLE + GRANT
  + AUTHORIZATION + SET ROLE, median ms.

Everything runs as a login role with CREATEROLE (NOINHERIT), not as a superuser: a
superuser passes every membership check without the cache being measured.

Prints medians; drops the scratch database (and its roles) at the end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.tenancy.roles import role_prefix  # noqa: E402
from bench.common import scratch_database  # noqa: E402


def create_tenants(dsn: str, prefix: str, start: int, count: int, with_inherit_clause: bool) -> None:
    grant = " WITH INHERIT FALSE, SET TRUE" if with_inherit_clause else ""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for chunk in range(start, start + count, 500):
            started = time.perf_counter()
            with conn.transaction():
                chunk_range = range(chunk, min(chunk + 500, start + count))
                # Every GRANT throws away this connection's membership cache, and the next
                # check rebuilds it over all roles: one role at a time, creating N roles
                # costs O(N^2) (hours at 10,000). So the chunk's roles and GRANTs first,
                # then one rebuild serves the chunk's schemas. The state this leaves is the
                # one provisioning one by one leaves.
                for i in chunk_range:
                    role = f"{prefix}b{i:06d}"
                    conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
                    conn.execute(f'GRANT "{role}" TO CURRENT_USER{grant}')
                for i in chunk_range:
                    role, schema = f"{prefix}b{i:06d}", f"t_b{i:06d}"
                    conn.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"')
                    conn.execute("SELECT set_config('role', %s, true)", (role,))
                    conn.execute(f'CREATE TABLE "{schema}".repositories (id bigint PRIMARY KEY, name text)')
                    conn.execute(f'INSERT INTO "{schema}".repositories VALUES (1, \'r\')')
                    conn.execute("SELECT set_config('role', 'none', true)")
                    # The baseline's twin: the same schema without a role (owned by the login user).
                    conn.execute(f'CREATE SCHEMA "t_n{i:06d}"')
                    conn.execute(f'CREATE TABLE "t_n{i:06d}".repositories (id bigint PRIMARY KEY, name text)')
                    conn.execute(f'INSERT INTO "t_n{i:06d}".repositories VALUES (1, \'r\')')
            done = min(chunk + 500, start + count)
            print(f"  tenants {chunk}-{done}: {(time.perf_counter() - started) * 1000 / (done - chunk):.1f} ms each"
                  " (role, grant, schema as the role, its twin without)", file=sys.stderr)


def per_transaction(dsn: str, prefix: str, count: int, transactions: int) -> tuple[float, float]:
    """Median µs per transaction: (search_path only, search_path + role)."""
    plain: list[float] = []
    roled: list[float] = []
    with psycopg.connect(dsn) as conn:
        for block in range(20):
            for use_role in ((False, True) if block % 2 == 0 else (True, False)):
                times = []
                for _ in range(transactions // 20):
                    i = random.randrange(count)
                    started = time.perf_counter()
                    if use_role:
                        conn.execute("SELECT set_config('search_path', %s, true), set_config('role', %s, true)",
                                     (f'"t_b{i:06d}"', f"{prefix}b{i:06d}"))
                    else:  # the twin schema without a role
                        conn.execute("SELECT set_config('search_path', %s, true)", (f'"t_n{i:06d}"',))
                    conn.execute("SELECT id, name FROM repositories").fetchall()
                    conn.commit()
                    times.append((time.perf_counter() - started) * 1e6)
                (roled if use_role else plain).append(statistics.median(times))
    return statistics.median(plain), statistics.median(roled)


def stall_after_grant(dsn: str, prefix: str, count: int, idle: int, rounds: int) -> float:
    """Median ms of an idle connection's first role-taking transaction after someone GRANTs."""
    conns = [psycopg.connect(dsn) for _ in range(idle)]
    samples: list[float] = []
    try:
        def take_role(conn: psycopg.Connection) -> float:
            i = random.randrange(count)
            started = time.perf_counter()
            conn.execute("SELECT set_config('search_path', %s, true), set_config('role', %s, true)",
                         (f'"t_b{i:06d}"', f"{prefix}b{i:06d}"))
            conn.execute("SELECT id FROM repositories").fetchall()
            conn.commit()
            return (time.perf_counter() - started) * 1000

        for conn in conns:
            take_role(conn)  # warm the membership cache
        with psycopg.connect(dsn, autocommit=True) as other:
            for r in range(rounds):
                role = f"{prefix}g{count}_{r:03d}"
                other.execute(f'CREATE ROLE "{role}" NOLOGIN')
                other.execute(f'GRANT "{role}" TO CURRENT_USER')  # what every provisioning does
                samples += [take_role(conn) for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    return statistics.median(samples)


def provisioning(dsn: str, prefix: str, rounds: int, with_inherit_clause: bool, tag: int) -> tuple[float, float]:
    """Median ms of a tenant's DDL transaction: (no role, with role)."""
    grant = " WITH INHERIT FALSE, SET TRUE" if with_inherit_clause else ""
    plain, roled = [], []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for r in range(rounds):
            for use_role in ((False, True) if r % 2 == 0 else (True, False)):
                schema, role = f"t_p{tag}_{r:03d}{int(use_role)}", f"{prefix}p{tag}_{r:03d}{int(use_role)}"
                started = time.perf_counter()
                with conn.transaction():
                    if use_role:
                        conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
                        conn.execute(f'GRANT "{role}" TO CURRENT_USER{grant}')
                        conn.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"')
                        conn.execute("SELECT set_config('role', %s, true)", (role,))
                    else:
                        conn.execute(f'CREATE SCHEMA "{schema}"')
                    conn.execute(f'CREATE TABLE "{schema}".repositories (id bigint PRIMARY KEY, name text)')
                    conn.execute(f'CREATE INDEX ON "{schema}".repositories (name)')
                (roled if use_role else plain).append((time.perf_counter() - started) * 1000)
    return statistics.median(plain), statistics.median(roled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", default="1000", help="comma-separated tenant counts (default 1000)")
    parser.add_argument("--transactions", type=int, default=4000)
    parser.add_argument("--idle", type=int, default=8, help="idle pooled connections to time after a GRANT")
    parser.add_argument("--rounds", type=int, default=5, help="GRANTs to time the stall after")
    args = parser.parse_args()
    counts = sorted(int(n) for n in args.tenants.split(","))

    with scratch_database(public_schema=False) as scratch:
        dsn, version = scratch.dsn, scratch.version
        with psycopg.connect(dsn) as conn:
            num = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
            database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        prefix = role_prefix(database)
        inherit_clause = num >= 160000
        # A superuser passes every membership check without the cache this is about:
        # work as a login role with CREATEROLE, as a deployment would.
        login = f"{prefix}login"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{login}" LOGIN CREATEROLE NOINHERIT')
            conn.execute(f'GRANT CREATE ON DATABASE "{database}" TO "{login}"')
        dsn = str(psycopg.conninfo.make_conninfo(dsn, user=login))
        print(f"PostgreSQL {version}", file=sys.stderr)
        rows = []
        made = 0
        for count in counts:
            create_tenants(dsn, prefix, made, count - made, inherit_clause)
            made = count
            plain_us, roled_us = per_transaction(dsn, prefix, count, args.transactions)
            stall = stall_after_grant(dsn, prefix, count, args.idle, args.rounds)
            prov_plain, prov_roled = provisioning(dsn, prefix, 20, inherit_clause, count)
            rows.append((count, plain_us, roled_us, stall, prov_plain, prov_roled))
            print(f"  {count} tenants: tx {plain_us:.0f} µs, with role {roled_us:.0f} µs"
                  f" ({roled_us / plain_us - 1:+.1%}); after a GRANT {stall:.2f} ms;"
                  f" DDL {prov_plain:.2f} ms, with role {prov_roled:.2f} ms", file=sys.stderr)

    print(f"\nPostgreSQL {version}: tenant roles, medians")
    print(f"{'tenants':>8} {'tx µs':>8} {'tx+role µs':>11} {'overhead':>9} {'after GRANT ms':>15}"
          f" {'DDL ms':>8} {'DDL+role ms':>12}")
    for count, plain_us, roled_us, stall, prov_plain, prov_roled in rows:
        print(f"{count:>8} {plain_us:>8.0f} {roled_us:>11.0f} {roled_us / plain_us - 1:>8.1%} {stall:>15.2f}"
              f" {prov_plain:>8.2f} {prov_roled:>12.2f}")
    print("tx: one transaction (set_config, SELECT, COMMIT) on a warm connection; after GRANT: the first")
    print("role-taking transaction of an idle connection after another session granted a new role")


if __name__ == "__main__":
    main()
