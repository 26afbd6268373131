"""The request path under gunicorn: GET and POST /v1/repositories, multi-tenant against a single-tenant build.

    .venv/bin/python bench/request_path.py                                   # 10 and 1,000 tenants
    .venv/bin/python bench/request_path.py --tenants 10 --round-trips-only   # the per-step tables only
    DATABASE_URL=postgresql://root@127.0.0.1:5432/postgres .venv/bin/python bench/request_path.py \
        --tenants 10,1000,10000

A scratch database (on DATABASE_URL's server, else where the tests would make one:
TEST_DATABASE_URL, Docker, or a throwaway embedded server) gets the public migrations
and N real tenants (provision_tenant on the ``enterprise`` plan, which has no rate
limit and no repository quota, in a few processes), each with ``--rows`` repositories.
The tenant counts are reached incrementally in the one database (10, then 990 more…).

For each count, three gunicorn servers are started on loopback, with the same
gunicorn.conf.py, the same settings and the same database:

- **multi**: ``wsgi:app``, the app as deployed;
- **single**: ``bench.single_tenant:create()``, the same app built the same way, with the
  tenancy machinery taken out: the API key is still checked (read by its prefix from
  ``api_keys``, hash compared, role checked, ``last_used_at`` touched, as a
  single-tenant app with API keys does), but no tenant or plan is joined to it, no
  tenant hints or tenant rate limit are checked, there is no per-transaction
  ``set_config('search_path', …, true)`` and none of the binding's ORM guards; its
  connections get ``SET search_path`` once, when they connect, to the first tenant's
  schema. Everything else (views, schemas, services, SQL, pool and ``pool_pre_ping``,
  unit of work, quota lock and plan read on create, audit event) is the same code.
  The quota lock is keyed by the request's key prefix (one per tenant), so creates
  queue on it exactly when the multi-tenant app's would, instead of all on one lock.
  :mod:`bench.single_tenant` says exactly what it replaces.
- **bare**: the same single-tenant build with no authentication at all
  (``BENCH_AUTH=none``): the lower bound, and the baseline of earlier runs.

The ratios are taken against **single**: tenancy overhead is what serving many tenants
adds to the same authenticated endpoints. The ratio against **bare** is printed too.

All three run ``--workers`` gthread workers with ``--threads`` threads each (default 2 x 4:
two processes for two cores, so Python runs on both; threads so one waits on
PostgreSQL while another runs Python), ``max_requests`` off (a worker restart
mid-run would be measured as the request path). A closed-loop load generator
(``--connections`` keep-alive http.client connections, in ``--generator-processes``
processes) sends each request as a random tenant of the N (its own API key; the
single build checks it but serves the one schema, the bare build ignores it):

- ``GET /v1/repositories?limit=R`` (R = --rows: the page is the same size however
  many rows the POSTs added, and costs the same: the first R by primary key);
- ``POST /v1/repositories`` with a github_repo_id unique to the request.

Per count, endpoint and repetition, the builds run one after the other, in an
order that rotates, each for ``--seconds`` after ``--warmup`` seconds of the same
load (not counted). Prints the medians over the repetitions of requests/second and
p50/p99 latency, and the ratios multi/single and multi/bare. The generator's own cost is printed too:
its CPU time per request, and what it sustains against ``/healthz`` (the cheapest
route of the same server).

Then, in this process, each build of the app serves ``--trace-requests`` requests of
each kind through Flask's test client over a one-connection pool whose libpq traffic
is traced (``PQtrace``): every round trip to PostgreSQL is counted, named by its SQL
(BEGIN, the pre-ping, the key lookup, set_config, …) and timed from its first message
to ReadyForQuery; the wall time spent inside the tenancy steps (``require_tenant_key``,
``api_keys.authenticate``, ``binding.set_search_path``: Python and their round trips)
is measured too. Those tables are the per-step cost of a request, before and after a
change to that path: ``--round-trips-only`` prints them alone, in seconds.

Writes a plot to docs/img/requests.png when matplotlib is importable (it is no project
dependency: ``.venv/bin/pip install matplotlib``), stops the servers and drops the
scratch database.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for bench.common and bench.single_tenant

import psycopg  # noqa: E402

from app.config import SETTINGS  # noqa: E402
from app.extensions import db  # noqa: E402
from app.tenancy.context import TenantBinding  # noqa: E402
from app.testing import make_test_app  # noqa: E402
from bench.common import add_common_arguments, provision_tenants, pyplot, report_plot, save_figure, scratch_database  # noqa: E402

BUILDS = ("multi", "single", "bare")
ENDPOINTS = ("GET", "POST")
PATH = "/v1/repositories"


# --- setup --------------------------------------------------------------------------

def provision(url: str, start: int, stop: int, processes: int) -> list[tuple[str, str]]:
    """Tenants ``b<start>`` … ``b<stop - 1>`` (enterprise plan); their (slug, token) in slug order."""
    return provision_tenants(url, [f"b{i:06d}" for i in range(start, stop)], processes, plan="enterprise")


def seed(dsn: str, slugs: list[str], rows: int) -> None:
    """``rows`` repositories per tenant, github_repo_id 1..rows (the POSTs use ids far above)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for slug in slugs:
            conn.execute(
                f'INSERT INTO "t_{slug}".repositories (github_repo_id, owner, name, full_name)'
                " SELECT g, 'octocat', 'repo-' || g, 'octocat/repo-' || g FROM generate_series(1, %s) g",
                (rows,),
            )


# --- the servers --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """One gunicorn on loopback with gunicorn.conf.py; stopped (its whole group) by :meth:`stop`."""

    def __init__(self, target: str, env: dict[str, str], workdir: Path, name: str) -> None:
        self.port = free_port()
        self.log_path = workdir / f"gunicorn-{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}",
             target],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn {target} did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/healthz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the master stops its workers
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        try:  # a worker outliving its master: the group this object started
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()
        text = self.log_path.read_text(errors="replace")
        if "Traceback" in text:
            raise RuntimeError(f"gunicorn logged a traceback:\n{text[-3000:]}")


def server_env(url: str, workdir: Path, args: argparse.Namespace, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
    env.update({
        "DATABASE_URL": url,
        "SECRET_KEY": "bench-secret-key-for-console-sessions-only",  # the console is on, as deployed
        "INSTANCE_PATH": str(workdir),
        "LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": str(args.workers),
        "GUNICORN_THREADS": str(args.threads),
        "GUNICORN_MAX_REQUESTS": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra,
    })
    return env


# --- the load generator -------------------------------------------------------------


@dataclass
class Run:
    """One timed run: what the generator saw in its counted window."""

    seconds: float
    latencies_ms: list[float]
    statuses: Counter[int]
    generator_cpu_s: float
    sent: int  # warm-up included: what the CPU time paid for

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def cpu_us_per_request(self) -> float:
        return self.generator_cpu_s / max(self.sent, 1) * 1e6


def _load(job: dict[str, Any]) -> dict[str, Any]:
    """In a generator process: ``threads`` closed loops, one keep-alive connection each."""
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    counted_from = job["start_at"] + job["warmup"]
    until = counted_from + job["seconds"]
    tokens, method = job["tokens"], job["method"]
    results: list[tuple[list[float], Counter[int], int]] = []

    def loop(index: int) -> None:
        rng = random.Random()
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        conn = http.client.HTTPConnection("127.0.0.1", job["port"], timeout=60)
        n = 0
        while time.time() < job["start_at"]:
            time.sleep(0.005)
        while True:
            headers = {"Authorization": f"Bearer {rng.choice(tokens)}"}
            body = None
            if method == "POST":
                repo_id = job["id_base"] + index * 10**7 + n
                body = json.dumps({"github_repo_id": repo_id, "owner": "bench", "name": f"r{repo_id}"}).encode()
                headers["Content-Type"] = "application/json"
            started = time.perf_counter()
            try:
                conn.request(method, job["path"], body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", job["port"], timeout=60)
                status = 0
            took = time.perf_counter() - started
            n += 1
            now = time.time()
            if now >= until:
                break
            if now - took >= counted_from:
                latencies.append(took * 1000)
                statuses[status] += 1
        conn.close()
        results.append((latencies, statuses, n))

    threads = [threading.Thread(target=loop, args=(job["first_index"] + i,)) for i in range(job["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    statuses: Counter[int] = Counter()
    for _, counted, _ in results:
        statuses.update(counted)
    return {
        "latencies": [x for latencies, _, _ in results for x in latencies],
        "statuses": dict(statuses),
        "sent": sum(n for _, _, n in results),
        "cpu": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
    }


class Generator:
    """``connections`` closed loops spread over ``processes`` processes, kept for the whole bench."""

    def __init__(self, processes: int, connections: int) -> None:
        self.processes = processes
        self.per_process = [connections // processes + (i < connections % processes) for i in range(processes)]
        self.pool = multiprocessing.get_context("spawn").Pool(processes)
        self.runs = 0

    def drive(self, port: int, method: str, path: str, tokens: list[str], seconds: float, warmup: float) -> Run:
        self.runs += 1
        start_at = time.time() + 0.3
        jobs, first = [], 0
        for threads in self.per_process:
            jobs.append({"port": port, "method": method, "path": path, "tokens": tokens, "threads": threads,
                         "start_at": start_at, "warmup": warmup, "seconds": seconds, "first_index": first,
                         "id_base": 10**12 + self.runs * 10**9})
            first += threads
        parts = self.pool.map(_load, jobs)
        statuses: Counter[int] = Counter()
        for part in parts:
            statuses.update({int(k): v for k, v in part["statuses"].items()})
        return Run(seconds, [x for p in parts for x in p["latencies"]], statuses,
                   sum(p["cpu"] for p in parts), sum(p["sent"] for p in parts))

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


# --- round trips, in process --------------------------------------------------------

#: A round trip is named by the SQL it sends (first match wins).
STEPS: tuple[tuple[str, str], ...] = (
    (r"^begin", "BEGIN"),
    (r"^commit", "COMMIT"),
    (r"^rollback", "ROLLBACK"),
    (r"^(;|select 1)$", "pool pre-ping"),
    (r"set_config\('search_path'", "binding: set_config(search_path)"),
    (r"from public\.api_keys", "API key lookup (multi: + tenant, plan, bind)"),
    (r"update public\.api_keys", "touch api_keys.last_used_at"),
    (r"pg_advisory_xact_lock", "quota lock (advisory)"),
    (r"public\.plans", "plan's max_repositories"),
    (r"insert into repositories", "INSERT repositories"),
    (r"insert into audit_events", "INSERT audit_events"),
    (r"from repositories", "SELECT repositories"),
)


def step_of(sql: str) -> str:
    text = " ".join(sql.split()).lower()
    for pattern, name in STEPS:
        if re.search(pattern, text):
            return name
    return text[:50]


_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\t")
_TRACE_LINE = re.compile(r"^(\S+ \S+)\t([FB])\t\d+\t(\w+)\t? ?(.*)$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_trace(text: str) -> list[list[tuple[str, float]]]:
    """A libpq trace as transactions, each a list of round trips (step name, µs).

    A round trip runs from the client's first message to the server's ReadyForQuery;
    a transaction from BEGIN to COMMIT or ROLLBACK. Prepared statements are named by
    the SQL their Parse carried.
    """
    from datetime import datetime

    records: list[str] = []
    for line in text.splitlines():  # SQL with newlines spans several lines of the trace
        if _STAMP.match(line) or not records:
            records.append(line)
        else:
            records[-1] += " " + line
    prepared: dict[str, str] = {}
    transactions: list[list[tuple[str, float]]] = []
    current: list[tuple[str, float]] = []
    sent_at: float | None = None
    sql: str | None = None
    executes = False
    for line in records:
        match = _TRACE_LINE.match(line)
        if match is None:
            continue
        stamp, direction, message, rest = match.groups()
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        quoted = _QUOTED.findall(rest)
        if direction == "F":
            if sent_at is None:
                sent_at = at
            executes = executes or message in {"Query", "Bind"}
            if message == "Query" and quoted:
                sql = sql or quoted[0]
            elif message == "Parse" and len(quoted) >= 2:
                if quoted[0]:
                    prepared[quoted[0]] = quoted[1]
                sql = sql or quoted[1]
            elif message == "Bind" and len(quoted) >= 2 and quoted[1]:
                sql = sql or prepared.get(quoted[1], quoted[1])
        elif message == "ReadyForQuery" and sent_at is not None:
            name = step_of(sql or "?") if executes else f"prepare: {step_of(sql or '?')}"
            current.append((name, (at - sent_at) * 1e6))
            if name in {"COMMIT", "ROLLBACK"}:
                transactions.append(current)
                current = []
            sent_at, sql, executes = None, None, False
    return transactions


@dataclass
class Steps:
    """Round trips per request of one build and endpoint, by step."""

    requests: int = 0
    #: Each request's wall time through the test client: its round trips and its Python.
    request_ms: list[float] = field(default_factory=list)
    #: Each request's wall ms inside the tenancy steps of :class:`StepTimer`.
    step_ms: list[dict[str, float]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    micros: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, transaction: list[tuple[str, float]]) -> None:
        self.requests += 1
        for name, us in transaction:
            self.counts[name] += 1
            self.micros[name].append(us)

    @property
    def per_request(self) -> float:
        return sum(self.counts.values()) / max(self.requests, 1)


class StepTimer:
    """Wall time spent inside a few functions of the request path, each without the others nested in it.

    The functions are replaced by timing wrappers in their modules for the duration of
    a ``with`` block (bench code: the app calls them through their module's globals).
    """

    #: (module, function, step name): the tenancy steps of a tenant request.
    TIMED = (
        ("app.api.auth", "require_tenant_key", "auth rest (token, hints, g, rate limit)"),
        ("app.tenancy.api_keys", "authenticate", "authenticate: key -> tenant (Python + SQL)"),
        ("app.tenancy.binding", "set_search_path", "binding: set_search_path"),
    )

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []  # time spent in nested timed calls, per open call
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> StepTimer:
        import importlib

        for module_name, function, step in self.TIMED:
            module = importlib.import_module(module_name)
            original = getattr(module, function)
            self._saved.append((module, function, original))
            setattr(module, function, self._wrap(original, step))
        return self

    def __exit__(self, *exc: object) -> None:
        for module, function, original in reversed(self._saved):
            setattr(module, function, original)
        self._saved.clear()

    def _wrap(self, original: Any, step: str) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(0.0)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                took = time.perf_counter() - started
                nested = self._stack.pop()
                self.current[step] += (took - nested) * 1000
                if self._stack:
                    self._stack[-1] += took

        return timed

    def take(self) -> dict[str, float]:
        """This request's ms per step; starts the next request at zero."""
        done, self.current = dict(self.current), defaultdict(float)
        return done


#: github_repo_ids of the traced POSTs: apart from the seeded rows and from the load runs'.
_TRACE_IDS = itertools.count(9 * 10**15)


def trace_requests(url: str, build: str, tenants: list[tuple[str, str]], single: TenantBinding,
                   count: int, rows: int, workdir: Path) -> dict[str, Steps]:
    """``count`` GETs then ``count`` POSTs through the test client, every round trip traced."""
    from sqlalchemy import event

    app = make_test_app(url, TESTING=False, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0)
    if build != "multi":
        from bench.single_tenant import single_tenant

        single_tenant(app, single, authenticate=build == "single")
    trace_path = workdir / f"trace-{build}.txt"
    traced: list[Any] = []
    with app.app_context():
        engine = db.engine

    def trace(dbapi_connection: Any, _record: Any) -> None:
        stream = open(trace_path, "ab")  # noqa: SIM115 - libpq writes to it until untrace()
        dbapi_connection.pgconn.trace(stream.fileno())
        traced.append((dbapi_connection, stream))

    event.listen(engine, "connect", trace)
    client = app.test_client()
    rng = random.Random(7)
    steps: dict[str, Steps] = {}
    timer = StepTimer()
    try:
        for method in ENDPOINTS:
            client.get("/healthz")
            took: list[float] = []
            timed: list[dict[str, float]] = []
            for _ in range(count + 1):
                token = rng.choice(tenants)[1]
                started = time.perf_counter()
                with timer:
                    if method == "GET":
                        response = client.get(f"{PATH}?limit={rows}", headers={"Authorization": f"Bearer {token}"})
                    else:
                        response = client.post(PATH, headers={"Authorization": f"Bearer {token}"}, json={
                            "github_repo_id": next(_TRACE_IDS), "owner": "bench", "name": "t"})
                took.append((time.perf_counter() - started) * 1000)
                timed.append(timer.take())
                if response.status_code not in (200, 201):
                    raise RuntimeError(f"{build} {method}: {response.status_code} {response.get_data(as_text=True)}")
            for dbapi_connection, stream in traced:  # flush the trace
                dbapi_connection.pgconn.untrace()
                stream.close()
            traced.clear()
            transactions = parse_trace(trace_path.read_text())
            trace_path.unlink()
            steps[method] = Steps(request_ms=took[-count:], step_ms=timed[-count:])
            for transaction in transactions[-count:]:  # the one before warmed the connection
                steps[method].add(transaction)
            with app.app_context():
                db.engine.dispose()  # the next endpoint starts on a new, traced connection
    finally:
        with app.app_context():
            db.engine.dispose()
    return steps


# --- report -------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def plot(path: Path, title: str, counts: list[int], results: dict[tuple[int, str, str], list[Run]]) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    xs = list(range(len(counts)))
    styles = {("multi", "GET"): ("tab:blue", "o-"), ("single", "GET"): ("tab:blue", "s--"),
              ("bare", "GET"): ("tab:blue", "^:"), ("multi", "POST"): ("tab:orange", "o-"),
              ("single", "POST"): ("tab:orange", "s--"), ("bare", "POST"): ("tab:orange", "^:")}
    for (build, method), (color, style) in styles.items():
        label = f"{method} {build}"
        runs = [results[(n, build, method)] for n in counts]
        axes[0].plot(xs, [median([r.rps for r in rs]) for rs in runs], style, color=color, label=label)
        axes[1].plot(xs, [median([r.percentile(0.5) for r in rs]) for rs in runs], style, color=color, label=label)
        axes[2].plot(xs, [median([r.percentile(0.99) for r in rs]) for rs in runs], style, color=color, label=label)
    for ax, ylabel in zip(axes, ("requests / second", "p50 latency, ms", "p99 latency, ms"), strict=True):
        ax.set_xticks(xs, [f"{n:,}" for n in counts])
        ax.set_xlabel("tenants")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
    return True


def paired(runs: list[Run], against: list[Run], value: Any) -> float:
    """The median over repetitions of one build's value against another's in the same repetition.

    The builds of one repetition run back to back, so they share the machine's mood; on
    a shared machine whose speed drifts between repetitions, this ratio moves less than
    the ratio of the medians.
    """
    return median([value(a) / value(b) for a, b in zip(runs, against, strict=True)])


def print_results(counts: list[int], results: dict[tuple[int, str, str], list[Run]]) -> None:
    print(f"{'tenants':>8} {'endpoint':>8} {'build':>7} {'rps':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'rps/single':>10} {'p50/single':>10} {'rps/bare':>9} {'p50/' + format(counts[0], ','):>10} "
          f"{'gen CPU us/req':>14} {'errors':>6}")
    rps, p50 = (lambda r: r.rps), (lambda r: r.percentile(0.5))
    for method in ENDPOINTS:
        base_p50 = median([r.percentile(0.5) for r in results[(counts[0], "multi", method)]])
        for n in counts:
            single, bare = results[(n, "single", method)], results[(n, "bare", method)]
            for build in BUILDS:
                runs = results[(n, build, method)]
                p99 = median([r.percentile(0.99) for r in runs])
                errors = sum(v for r in runs for k, v in r.statuses.items() if k not in (200, 201))
                vs_first = f"{median([p50(r) for r in runs]) / base_p50:.2f}x" if build == "multi" else ""
                print(f"{n:>8,} {method:>8} {build:>7} {median([rps(r) for r in runs]):>7.0f} "
                      f"{median([p50(r) for r in runs]):>7.2f} {p99:>7.2f} "
                      f"{paired(runs, single, rps):>9.2f}x {paired(runs, single, p50):>9.2f}x "
                      f"{paired(runs, bare, rps):>8.2f}x {vs_first:>10} "
                      f"{median([r.cpu_us_per_request for r in runs]):>14.0f} {errors:>6}")


def print_steps(n: int, steps: dict[tuple[str, str], Steps]) -> None:
    print(f"\nround trips per request at {n:,} tenants (in process, one traced connection; "
          "µs: median from the first message to ReadyForQuery)")
    columns = [(b, m) for m in ENDPOINTS for b in BUILDS]
    names: list[str] = []
    for key in columns:
        names += [s for s in steps[key].counts if s not in names]
    order = [name for _, name in STEPS]
    names.sort(key=lambda s: order.index(s) if s in order else len(order))
    header = "".join(f" {m + ' ' + b:>22}" for b, m in columns)
    print(f"{'step':<44}{header}")
    for name in names:
        cells = ""
        for key in columns:
            s = steps[key]
            if s.counts[name]:
                cells += f" {s.counts[name] / s.requests:>6.2f} x {median(s.micros[name]):>7.0f} µs  "
            else:
                cells += f" {'-':>22}"
        print(f"{name:<44}{cells}")
    totals = "".join(f" {steps[key].per_request:>6.2f} round trips  " for key in columns)
    print(f"{'total':<44}{totals}")
    trips = "".join(f" {sum(map(sum, s.micros.values())) / s.requests / 1000:>16.2f} ms  "
                    for s in (steps[key] for key in columns))
    print(f"{'round trips, mean ms per request':<44}{trips}")
    walls = "".join(f" {median(steps[key].request_ms):>16.2f} ms  " for key in columns)
    print(f"{'request, median (test client)':<44}{walls}")
    print("wall ms per request inside each tenancy step (Python and its round trips; a step's own time,"
          " without the others nested in it):")
    for _, _, step in StepTimer.TIMED:
        cells = ""
        for key in columns:
            values = [timed.get(step, 0.0) for timed in steps[key].step_ms]
            cells += f" {median(values):>16.2f} ms  " if any(values) else f" {'-':>22}"
        print(f"{'  ' + step:<44}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", default="10,1000", help="comma-separated tenant counts (default 10,1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="counted seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before each run (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per build, endpoint and count (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (default 4)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent client connections (default 8)")
    parser.add_argument("--generator-processes", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument("--rows", type=int, default=5, help="repositories per tenant, and GET's page size (default 5)")
    parser.add_argument("--trace-requests", type=int, default=200,
                        help="requests per build and endpoint whose round trips are traced (default 200)")
    parser.add_argument("--round-trips-only", action="store_true",
                        help="skip gunicorn and the load: only the traced requests in process (seconds, not minutes)")
    add_common_arguments(parser, "requests.png")
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.tenants.split(",") if n.strip()})

    results: dict[tuple[int, str, str], list[Run]] = defaultdict(list)
    steps: dict[int, dict[tuple[str, str], Steps]] = {}
    health: list[Run] = []
    failure: BaseException | None = None
    version = "?"

    workdir = Path(tempfile.mkdtemp(prefix="tenantry-bench-"))
    generator = Generator(args.generator_processes, args.connections)
    try:
        with scratch_database() as scratch:
            url, dsn, version = scratch.url, scratch.dsn, scratch.version
            servers: list[Gunicorn] = []
            try:
                print(f"PostgreSQL {version}; tenants {counts}; gunicorn {args.workers} workers x {args.threads}"
                      f" threads; {args.connections} connections; {args.repeat} x {args.seconds:g} s"
                      f" (+{args.warmup:g} s warm-up) per run", file=sys.stderr)
                tenants: list[tuple[str, str]] = []
                for n in counts:
                    made = provision(url, len(tenants), n, args.provision_processes)
                    seed(dsn, [slug for slug, _ in made], args.rows)
                    tenants += made
                    with psycopg.connect(dsn) as conn:
                        first_id = conn.execute("SELECT id FROM public.tenants WHERE slug = %s",
                                                (tenants[0][0],)).fetchone()[0]  # type: ignore[index]
                    single = TenantBinding.for_slug(first_id, tenants[0][0])
                    steps[n] = {}
                    if args.round_trips_only:
                        for build in BUILDS:
                            for method, s in trace_requests(url, build, tenants, single, args.trace_requests,
                                                            args.rows, workdir).items():
                                steps[n][(build, method)] = s
                        continue
                    tokens = [token for _, token in tenants]
                    servers = [
                        Gunicorn("wsgi:app", server_env(url, workdir, args), workdir, f"multi-{n}"),
                        *(Gunicorn("bench.single_tenant:create()", server_env(
                            url, workdir, args, BENCH_SCHEMA=single.schema_name, BENCH_TENANT_ID=str(first_id),
                            BENCH_AUTH=auth,
                        ), workdir, f"{build}-{n}") for build, auth in (("single", "key"), ("bare", "none"))),
                    ]
                    by_build = dict(zip(BUILDS, servers, strict=True))
                    if not health:  # what the generator sustains on the cheapest route
                        for _ in range(args.repeat):
                            health.append(generator.drive(by_build["multi"].port, "GET", "/healthz", tokens,
                                                          min(args.seconds, 5), args.warmup))
                    for rep in range(args.repeat):
                        for e, method in enumerate(ENDPOINTS):
                            turn = (rep + e) % len(BUILDS)  # each build leads in turn
                            order = BUILDS[turn:] + BUILDS[:turn]
                            for build in order:
                                path = PATH if method == "POST" else f"{PATH}?limit={args.rows}"
                                run = generator.drive(by_build[build].port, method, path, tokens,
                                                      args.seconds, args.warmup)
                                results[(n, build, method)].append(run)
                                bad = {k: v for k, v in run.statuses.items() if k not in (200, 201)}
                                print(f"  {n} tenants, rep {rep + 1}, {method} {build}: {run.rps:.0f} rps, "
                                      f"p50 {run.percentile(0.5):.2f} ms, p99 {run.percentile(0.99):.2f} ms"
                                      + (f", errors {bad}" if bad else ""), file=sys.stderr)
                                if bad:
                                    raise RuntimeError(f"{method} {build} at {n} tenants answered {bad}; "
                                                       f"see {by_build[build].log_path}")
                    for s in servers:
                        s.stop()
                    servers = []
                    for build in BUILDS:
                        for method, s in trace_requests(url, build, tenants, single, args.trace_requests,
                                                        args.rows, workdir).items():
                            steps[n][(build, method)] = s
            except BaseException as exc:  # re-raised below, once the servers and the database are gone
                failure = exc
            finally:
                for s in servers:
                    try:
                        s.stop()
                    except Exception as exc:  # noqa: BLE001 - the first failure is the one reported
                        failure = failure or exc
    finally:
        generator.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if failure is not None:
        raise failure

    print()
    if args.round_trips_only:
        print(f"PostgreSQL {version}")
        for n in counts:
            print_steps(n, steps[n])
        return
    print(f"PostgreSQL {version}; gunicorn {args.workers} gthread workers x {args.threads} threads; "
          f"{args.connections} keep-alive connections ({args.generator_processes} generator processes); "
          f"medians of {args.repeat} x {args.seconds:g} s")
    print_results(counts, results)
    print("rps/single, p50/single, rps/bare: each build against the single-tenant build with API keys, and"
          " against the one with no authentication, same count (median over repetitions of the ratio within"
          " a repetition);")
    print(f"p50/{counts[0]:,}: the multi-tenant p50 against its own at {counts[0]:,} tenants")
    h_rps, h_cpu = median([r.rps for r in health]), median([r.cpu_us_per_request for r in health])
    print(f"generator: /healthz {h_rps:.0f} rps, p50 {median([r.percentile(0.5) for r in health]):.2f} ms, "
          f"{h_cpu:.0f} µs of generator CPU per request")
    for n in counts:
        print_steps(n, steps[n])
    if not args.no_plot:
        title = (f"GET/POST /v1/repositories, multi-tenant vs single-tenant builds, PostgreSQL {version.split()[0]}, "
                 f"gunicorn {args.workers}x{args.threads}, {args.connections} connections, median of {args.repeat}")
        report_plot(plot(args.plot, title, counts, results), args.plot)


if __name__ == "__main__":
    main()
