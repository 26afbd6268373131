"""The cost of usage metering on the request path: GET /v1/tenant with metering on against off.

    flock /tmp/bench.lock .venv/bin/python bench/metering.py                 # 6 rounds of 3 s each way
    flock /tmp/bench.lock .venv/bin/python bench/metering.py --rounds 10 --seconds 5
    flock /tmp/bench.lock .venv/bin/python bench/metering.py --storage redis --rounds 3   # off / memory / redis

A scratch database (DATABASE_URL's server, else where the tests would make one) gets the
public migrations, a plan with no rate limit and a monthly limit no run reaches (so the
limit check runs on every request, as it does for free and pro tenants), and
``--tenants`` tenants on it. gunicorn servers start on loopback with the same
gunicorn.conf.py and settings but ``USAGE_METERING=false`` ("off") and ``true``
counting in memory ("memory"); with ``--storage redis`` a third counts in Redis
(``USAGE_STORAGE_URI=--redis-url``, a key prefix of the run's own, deleted after it).
All are up for the whole run, so none pays a start-up inside a round.

Then ``--rounds`` rounds: each round measures every server one after the other
(``--seconds`` each, after ``--warmup`` seconds not counted), the order rotating
from round to round. The load is closed-loop: ``--connections`` keep-alive connections
in threads of this process, each request as a random tenant (its own admin API key).
Prints requests/second per round and the medians, and the cost of metering:
1 - median(metered) / median(off). The flushes of the metered servers (every
USAGE_FLUSH_SECONDS, default 5) fall inside the measured time. Then the Python cost of
metering alone, timed in this process over many calls (the part of the difference a
shared machine's noise hides; with Redis, one script round trip each). Last, the
requests the metered servers served against the api_requests their workers stored once
stopped (gracefully: each flushes what it holds): the two are equal.
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import provision_tenants, scratch_database  # noqa: E402
from tests.stack import gunicorn  # noqa: E402


def load(port: int, tokens: list[str], connections: int, seconds: float) -> tuple[int, float]:
    """Requests served, and requests/second, of ``connections`` closed-loop clients for ``seconds``."""
    done = [0] * connections
    stop_at = time.perf_counter() + seconds

    def client(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        rng = random.Random(slot)
        while time.perf_counter() < stop_at:
            conn.request("GET", "/v1/tenant", headers={"Authorization": f"Bearer {rng.choice(tokens)}"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET /v1/tenant answered {response.status}")
            done[slot] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), sum(done) / (time.perf_counter() - started)


def metering_call_cost(calls: int = 200_000) -> float:
    """Microseconds of what metering adds to one request (limit check on a cached count, then the count)."""
    from app.tenancy import usage

    kept, usage._BUFFER = usage._BUFFER, usage.UsageBuffer()  # noqa: SLF001 - counts of a fake tenant, dropped
    try:
        usage.check_monthly_limit(lambda key: 0, 1, usage.API_REQUESTS, 10**12, 3600.0)  # caches the stored value
        started = time.perf_counter()
        for _ in range(calls):
            usage.check_monthly_limit(lambda key: 0, 1, usage.API_REQUESTS, 10**12, 3600.0)
            usage.record_for(1, usage.API_REQUESTS)
        return (time.perf_counter() - started) / calls * 1e6
    finally:
        usage._BUFFER = kept  # noqa: SLF001


def redis_call_cost(url: str, prefix: str, calls: int = 5_000) -> float:
    """Microseconds of one count in Redis: the script's round trip (the limit checked in it)."""
    from app.tenancy.usage_redis import RedisCounts

    counts = RedisCounts(url, prefix)
    key = (1, "api_requests", date(2000, 1, 1))  # a fake tenant in a month no one counts in
    try:
        counts.count(key, 1, 10**12, seed=0)
        started = time.perf_counter()
        for _ in range(calls):
            counts.count(key, 1, 10**12)
        return (time.perf_counter() - started) / calls * 1e6
    finally:
        counts.close()


def drop_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--threads", default="4")
    parser.add_argument("--storage", choices=("memory", "redis"), default="memory",
                        help="redis: a third server counting in Redis beside off and memory")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    prefix = f"tenantry-usage-bench-{uuid.uuid4().hex[:8]}"
    sides = {"off": {"USAGE_METERING": "false"}, "memory": {"USAGE_METERING": "true"}}
    if args.storage == "redis":
        sides["redis"] = {"USAGE_METERING": "true", "USAGE_STORAGE_URI": args.redis_url, "USAGE_KEY_PREFIX": prefix}
    names = list(sides)
    with scratch_database() as scratch, tempfile.TemporaryDirectory() as tmp:
        plan = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(scratch.dsn) as conn:
            conn.execute("INSERT INTO public.plans (name, max_api_requests_per_month) VALUES (%s, %s)",
                         (plan, 10**12))
        # Tenants of their own for each metered side: a Redis total seeded from PostgreSQL would
        # absorb (GREATEST) what a memory-mode server adds to the same rows after (docs/usage.md).
        metered = names[1:]
        slugs = {name: [f"{name[:3]}{i:04d}" for i in range(args.tenants)] for name in metered}
        made = dict(provision_tenants(scratch.url, [slug for name in metered for slug in slugs[name]], 2, plan=plan))
        tokens = {name: [made[slug] for slug in slugs[name]] for name in metered}
        tokens["off"] = tokens["memory"]
        common = {"WEB_CONCURRENCY": args.workers, "GUNICORN_THREADS": args.threads, "GUNICORN_MAX_REQUESTS": "0"}
        results: dict[str, list[float]] = {name: [] for name in names}
        served = dict.fromkeys(names, 0)
        try:
            with ExitStack() as servers_up:
                servers = {name: servers_up.enter_context(gunicorn(scratch.url, Path(tmp), **settings, **common)).port
                           for name, settings in sides.items()}
                for round_ in range(args.rounds):
                    order = names[round_ % len(names):] + names[:round_ % len(names)]
                    for name in order:
                        warm, _ = load(servers[name], tokens[name], args.connections, args.warmup)
                        measured, rate = load(servers[name], tokens[name], args.connections, args.seconds)
                        served[name] += warm + measured
                        results[name].append(rate)
                    print(f"round {round_ + 1}: " + ", ".join(f"{n} {results[n][-1]:.0f} req/s" for n in order),
                          flush=True)
            with psycopg.connect(scratch.dsn) as conn:
                counted = {name: conn.execute(
                    "SELECT coalesce(sum(c.value), 0) FROM public.usage_counters c JOIN public.tenants t"
                    " ON t.id = c.tenant_id WHERE c.metric = 'api_requests' AND t.slug = ANY(%s)",
                    (slugs[name],)).fetchone()[0] for name in metered}  # type: ignore[index]
            redis_cost = redis_call_cost(args.redis_url, prefix) if "redis" in sides else None
        finally:
            if "redis" in sides:
                drop_keys(args.redis_url, prefix)
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    per_call = metering_call_cost()
    print(f"PostgreSQL {scratch.version}; {args.workers} workers x {args.threads} threads, "
          f"{args.connections} connections, {args.tenants} tenants, {args.rounds} rounds of {args.seconds:.0f} s")
    print("median req/s: " + ", ".join(f"{name} {median:.0f}" for name, median in medians.items()))
    for name in names[1:]:
        print(f"cost of metering in {name}: {100 * (1 - medians[name] / medians['off']):+.1f}% "
              f"(ratio {medians[name] / medians['off']:.3f}; negative: faster than off, i.e. noise)")
    share = 100 * per_call * 1e-6 * medians["off"] / int(args.workers)
    print(f"metering's own work per request, in memory, in this process: {per_call:.1f} us; at "
          f"{medians['off']:.0f} req/s on {args.workers} workers that is {share:.2f}% of a worker's time")
    if redis_cost is not None:
        print(f"one count in Redis (the script's round trip), from this process: {redis_cost:.0f} us")
    for name in metered:
        print(f"requests the {name} server served: {served[name]}; api_requests counted for its tenants (the "
              f"last ones flushed at its graceful shutdown): {counted[name]}")


if __name__ == "__main__":
    main()
