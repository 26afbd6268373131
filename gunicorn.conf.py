"""gunicorn's settings for Tenantry: ``gunicorn -c gunicorn.conf.py wsgi:app`` (the image's CMD).

gunicorn executes this file as Python and keeps its module-level names as settings.
Each one comes from an environment variable with a default fit for a container; the
table is in docs/configuration.md. (gunicorn also loads ./gunicorn.conf.py by itself
when started from the repository root without ``-c``.) A bad value stops gunicorn
before it binds, naming the variable. ``GUNICORN_CMD_ARGS`` (gunicorn's own variable,
e.g. ``--log-level debug``) and command-line options still override what is set here.

Not set, on purpose: ``preload_app``. wsgi.py builds the app, and with it the engine's
connection pool, at import; preloaded, every forked worker would inherit the master's
connections. Each worker imports the app itself instead.
"""

import os


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is invalid: must be an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r} is invalid: must be at least {minimum}")
    return value


# Every interface, on PORT (the convention of most platforms that set one).
bind = [f"0.0.0.0:{_env_int('PORT', 8000, minimum=1)}"]

# Worker processes: about 2 per core. Each has its own database pool
# (DB_POOL_SIZE + DB_MAX_OVERFLOW connections at most) and, with RATELIMIT_STORAGE_URI
# at memory://, its own rate-limit counters.
workers = _env_int("WEB_CONCURRENCY", 2, minimum=1)
# Above 1, gunicorn runs gthread workers: this many requests at once per process.
threads = _env_int("GUNICORN_THREADS", 1, minimum=1)

# A worker silent for this long is killed and replaced (a request stuck that long).
timeout = _env_int("GUNICORN_TIMEOUT", 30)
# After SIGTERM, in-flight requests get this long to finish before workers are killed.
# Keep it below the orchestrator's grace period before SIGKILL (Kubernetes: 30 s;
# docker stop: 10 s unless --time or compose's stop_grace_period says otherwise).
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 25)
# Seconds an idle keep-alive connection stays open (gthread workers; sync workers close
# each connection). Above the load balancer's idle timeout is wrong; below is safe.
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)

# No request-count recycling by default: nothing needs it. The per-schema catalog cache
# of the PostgreSQL backends is bounded by recycling connections, not workers
# (DB_RECYCLE_AFTER_TENANTS, DB_POOL_RECYCLE), and a worker's own memory grew 3.2 MB from
# 10 to 10,000 tenants (docs/benchmarks.md, Memory). With 1,000 ± 100 and evenly spread
# load, all three workers of a deployment restarted within 2 s of each other and a
# request waited 5.9 s for one to come back. Set GUNICORN_MAX_REQUESTS to bound a leak
# of your own; the jitter then defaults to half of it, so restarts spread over half a
# period (random: two can still come close; keep WEB_CONCURRENCY at 2 or more).
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", max_requests // 2)

# The workers' heartbeat files: on a tmpfs, a slow or full disk cannot stall them.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# No access log from gunicorn: requests are the application's to log. gunicorn's own
# messages (start, worker timeouts and restarts) go to stderr.
accesslog = None
errorlog = "-"
loglevel = "info"

# Proxies whose X-Forwarded-Proto/For gunicorn trusts: comma-separated addresses or
# CIDR networks, or * behind a proxy that alone can reach the port.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# No control socket (gunicorn 25+ would create one under $HOME, which the image's user
# has none of); signals still manage the server: TERM, HUP, TTIN/TTOU.
control_socket_disable = True


def when_ready(server):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """Once, from the master: warnings about a database not migrated, limits counted apart."""
    from app.http_server import (
        warn_if_public_schema_behind,
        warn_if_rate_limits_per_process,
        warn_if_usage_per_process,
    )

    warn_if_public_schema_behind(server.log)
    warn_if_rate_limits_per_process(server.log, server.cfg.workers)
    warn_if_usage_per_process(server.log, server.cfg.workers)


def post_worker_init(worker):  # noqa: ANN001, ANN201, ARG001 - gunicorn's hook signature
    """Requests gunicorn refuses itself (malformed, too long) are answered as problem+json."""
    from app.http_server import answer_with_problems

    answer_with_problems()


def worker_exit(server, worker):  # noqa: ANN001, ANN201, ARG001 - gunicorn's hook signature
    """A worker stopping gracefully writes the usage it counted since its last flush."""
    from app.tenancy import usage

    usage.shutdown()


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """Multiprocess metrics (PROMETHEUS_MULTIPROC_DIR): drop a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from app.metrics import child_exit as drop_dead_worker

        drop_dead_worker(server, worker)
