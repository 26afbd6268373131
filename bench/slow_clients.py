"""A control tenant's latency while idle and slowloris connections are held, with and without nginx in front.

    DATABASE_URL=postgresql://root@127.0.0.1:5432/test .venv/bin/python bench/slow_clients.py
    DATABASE_URL=… .venv/bin/python bench/slow_clients.py --idle 1000 --slowloris 100 --seconds 20 --repeat 3

A scratch database gets the public migrations and one tenant with a repository.
gunicorn serves it as shipped (gunicorn.conf.py, ``--workers`` sync workers); the same
attack (tests/attacks.py: ``--idle`` connections that send nothing, ``--slowloris`` ones
that send a header line every 4 s, each reopened when the server closes it) is held
against gunicorn directly, then against deploy/nginx.conf in front of it, alternating,
``--repeat`` times. Meanwhile the control tenant sends ``GET /v1/repositories`` back to
back (new connection each, 10 s client timeout). Prints, per front and run, the control
requests' count, failures, p50 and p99, then the medians.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.stack, tests.attacks

from app.testing import ADMIN_TOKEN, fresh_database  # noqa: E402
from tests.attacks import control_request, hold_slow_clients  # noqa: E402
from tests.stack import gunicorn, nginx  # noqa: E402

HOST = "127.0.0.1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--slowloris", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        sys.exit("set DATABASE_URL to a PostgreSQL server (a scratch database is created on it)")
    results: dict[str, list] = {"gunicorn": [], "nginx": []}
    with fresh_database(server_url) as url, tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, DATABASE_URL=url, FLASK_APP="wsgi")
        subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], env=env, check=True, capture_output=True,
                       cwd=Path(__file__).resolve().parents[1])
        with gunicorn(url, Path(tmp), WEB_CONCURRENCY=str(args.workers)) as served, nginx(served) as proxy:
            conn = http.client.HTTPConnection(HOST, served.port, timeout=30)
            tenant = {"slug": "control", "name": "Control", "plan": "enterprise"}
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
            conn.request("POST", "/v1/admin/tenants", json.dumps(tenant), headers)
            token = json.loads(conn.getresponse().read())["api_key"]["token"]
            conn.close()
            for _ in range(args.repeat):
                for front, port in (("gunicorn", served.port), ("nginx", proxy.port)):
                    run = hold_slow_clients(HOST, port, control_request(HOST, port, token), idle=args.idle,
                                            slowloris=args.slowloris, seconds=args.seconds)
                    results[front].append(run)
                    print(f"{front:8} {run.summary()}", flush=True)
    print()
    for front, runs in results.items():
        failed = sum(len(r.failures) for r in runs)
        total = sum(len(r.latencies) for r in runs)
        print(f"{front:8} median p50 {statistics.median(r.p50_ms for r in runs):9.1f} ms, "
              f"median p99 {statistics.median(r.p99_ms for r in runs):9.1f} ms, "
              f"{failed}/{total} control requests failed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
