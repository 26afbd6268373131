"""A tenant schema moved between Citus workers while it is served: the move's duration, and requests meanwhile.

    DATABASE_URL=postgresql://postgres@127.0.0.1:9700/citus .venv/bin/python bench/citus_move.py
    DATABASE_URL=… .venv/bin/python bench/citus_move.py --rows 0,10000,100000 --repeat 3

Needs a Citus coordinator with schema-based sharding and two workers (``.ci/run`` starts
one from ``../shared/citus``). A scratch database gets the public migrations and two
tenants on the ``enterprise`` plan (no quota, no rate limit): the one that moves, with
``--rows`` repositories, and a control tenant. gunicorn serves the app on loopback
(``gunicorn.conf.py``, 2 gthread workers x 4 threads); ``--clients`` threads send
``GET /v1/repositories?limit=5`` and ``POST /v1/repositories`` in turn, half as the moving
tenant, half as the control one, on keep-alive connections.

For each size and repetition: ``--settle`` seconds of load before the move (the baseline),
then ``flask tenants move`` to the other worker as a subprocess (timed from start to
exit), then ``--settle`` seconds after. Prints, per size, the median move duration and
the p50/p99 latency of the moving tenant's requests before and during the move, the
control tenant's during it, and every failed request (there should be none).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.common

from app.config import SETTINGS
from app.testing import ADMIN_TOKEN, SECRET_KEY
from bench.common import ROOT, provision_tenants, scratch_database

#: github_repo_id of every POST: unique per tenant is required (409 otherwise).
_REPO_IDS = itertools.count(10_000_000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, url: str, tmp: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
        env.update({"DATABASE_URL": url, "ADMIN_TOKEN": ADMIN_TOKEN, "SECRET_KEY": SECRET_KEY,
                    "INSTANCE_PATH": str(tmp),
                    "LOG_LEVEL": "WARNING", "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "4",
                    "GUNICORN_MAX_REQUESTS": "0", "PORT": str(self.port)})
        self.env = env
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}",
             "wsgi:app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not get ready")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


class Load:
    """Client threads; each request's (start, latency, tenant, status) is kept."""

    def __init__(self, port: int, tokens: dict[str, str], clients: int) -> None:
        self.samples: list[tuple[float, float, str, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(port, slug, token, n), daemon=True)
                        for n, (slug, token) in enumerate(list(tokens.items()) * (clients // len(tokens)))]
        for thread in self.threads:
            thread.start()

    def _run(self, port: int, slug: str, token: str, number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = 0
        while not self.stop.is_set():
            i += 1
            if i % 2:
                method, path, body = "GET", "/v1/repositories?limit=5", None
            else:
                method, path = "POST", "/v1/repositories"
                repo = next(_REPO_IDS)  # unique across threads and repetitions
                body = json.dumps({"github_repo_id": repo, "owner": "o", "name": f"r{repo}"}).encode()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            started = time.monotonic()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            self.samples.append((started, time.monotonic() - started, slug, status))

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000 if ordered else float("nan")


def node_of(dsn: str, slug: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT DISTINCT n.nodename || ':' || n.nodeport FROM pg_dist_schema s"
            " JOIN pg_dist_partition p ON p.colocationid = s.colocationid"
            " JOIN pg_dist_shard sh ON sh.logicalrelid = p.logicalrelid"
            " JOIN pg_dist_placement pl ON pl.shardid = sh.shardid"
            " JOIN pg_dist_node n ON n.groupid = pl.groupid WHERE s.schemaid = %s::regnamespace",
            (f"t_{slug}",)).fetchone()
    return row[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="0,10000", help="repositories in the moving tenant (default 0,10000)")
    parser.add_argument("--repeat", type=int, default=3, help="moves per size (default 3)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of load before and after (default 3)")
    args = parser.parse_args()
    sizes = [int(r) for r in args.rows.split(",")]
    import tempfile

    results: dict[int, list[dict[str, float]]] = {}
    failures: list[tuple[int, str, int]] = []
    with scratch_database() as scratch, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(scratch.dsn) as conn:
            if conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'citus'").fetchone()[0] == 0:
                sys.exit("DATABASE_URL is not a Citus coordinator")
            workers = [f"{h}:{p}" for h, p in conn.execute(
                "SELECT nodename, nodeport FROM pg_dist_node WHERE groupid <> 0 ORDER BY nodeport")]
        for size in sizes:
            slug, control = f"mover{size}", f"control{size}"
            tokens = dict(provision_tenants(scratch.url, [slug, control], 1, plan="enterprise"))
            with psycopg.connect(scratch.dsn, autocommit=True) as conn:
                conn.execute(f'INSERT INTO "t_{slug}".repositories (github_repo_id, owner, name, full_name)'
                             " SELECT g, 'octo', 'r' || g, 'octo/r' || g FROM generate_series(1, %s) g", (size,))
            server = Server(scratch.url, Path(tmp))
            try:
                for _ in range(args.repeat):
                    load = Load(server.port, tokens, args.clients)
                    time.sleep(args.settle)
                    target = next(w for w in workers if w != node_of(scratch.dsn, slug))
                    began = time.monotonic()
                    moved = subprocess.run(
                        [str(Path(sys.executable).with_name("flask")), "--app", "wsgi", "tenants", "move", slug,
                         "--to", target, "--json"], cwd=ROOT, env=server.env, capture_output=True, text=True)
                    ended = time.monotonic()
                    time.sleep(args.settle)
                    load.finish()
                    if moved.returncode != 0:
                        raise RuntimeError(moved.stderr)
                    before = [lat for t, lat, s, st in load.samples if s == slug and t < began and st < 400]
                    during = [lat for t, lat, s, st in load.samples if s == slug and began <= t <= ended and st < 400]
                    control_during = [lat for t, lat, s, st in load.samples
                                      if s == control and began <= t <= ended and st < 400]
                    failures += [(size, s, st) for _, _, s, st in load.samples if st == 0 or st >= 400]
                    results.setdefault(size, []).append({
                        "move_s": ended - began, "in_move_s": json.loads(moved.stdout)["seconds"],
                        "before_p50": pct(before, 0.5), "before_p99": pct(before, 0.99),
                        "during_p50": pct(during, 0.5), "during_p99": pct(during, 0.99),
                        "during_max": pct(during, 1.0), "during_n": len(during),
                        "control_p99": pct(control_during, 0.99),
                    })
                    print(f"  {size:,} rows: moved in {ended - began:.2f} s, during p99 "
                          f"{results[size][-1]['during_p99']:.0f} ms", file=sys.stderr)
            finally:
                server.stop()
    print()
    print(f"tenant move under load ({args.clients} client threads, GET and POST in turn), "
          f"medians of {args.repeat} moves")
    print(f"{'rows':>8} {'move s':>7} {'in-core s':>9} {'before p50/p99 ms':>18} {'during p50/p99/max ms':>22} "
          f"{'reqs during':>11} {'control p99 ms':>14}")
    for size, runs in results.items():
        m = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"{size:>8,} {m['move_s']:>7.2f} {m['in_move_s']:>9.2f} "
              f"{m['before_p50']:>8.1f} / {m['before_p99']:>6.1f} "
              f"{m['during_p50']:>8.1f} / {m['during_p99']:>6.1f} / {m['during_max']:>5.0f} "
              f"{m['during_n']:>11.0f} {m['control_p99']:>14.1f}")
    print(f"failed requests: {len(failures)}" + (f" {failures[:5]}" if failures else ""))


if __name__ == "__main__":
    main()
