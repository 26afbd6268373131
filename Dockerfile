# Tenantry API image: gunicorn serving wsgi:app on port 8000, as a non-root user.
#
# Production contract (see docs/operations.md, Deploying):
# - DATABASE_URL must be set. Without it create_app() would start the embedded
#   development PostgreSQL; this image never does: the entrypoint refuses to start.
# - The image never migrates on start. Run the public migrations as a one-shot step
#   before the new release takes traffic (/readyz answers 503 until the public schema
#   is at head), with the same image and environment:
#       docker run --rm -e DATABASE_URL=... <image> flask db upgrade
#   Point that DATABASE_URL at PostgreSQL itself, not at a transaction-mode pooler:
#   public migrations pass search_path in the connection's startup options.
# - INSTANCE_PATH points at a writable scratch directory (/tmp/tenantry); nothing in
#   production mode keeps state there.
# - ADMIN_TOKEN enables /v1/admin/*; unset, the admin API refuses every call.
# - SECRET_KEY signs the operator console's session cookies: required while the console
#   is on (CONSOLE_ENABLED, the default); gunicorn refuses to start without it.
# - gunicorn's settings (PORT, WEB_CONCURRENCY, GUNICORN_THREADS, timeouts, ...) come
#   from the environment through gunicorn.conf.py; see docs/configuration.md.
#
# The base image is pinned by version and by digest (the multi-arch index digest of
# python:3.11.14-slim-bookworm). To update: change both, from `docker buildx
# imagetools inspect python:3.11.X-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- build: a virtualenv with the locked dependencies and the project -------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, so the layers are reused until a lock changes. Every file is
# checked against its hash: the runtime dependencies into the venv, the build backend
# (hatchling and what it needs, requirements-build.lock) into a directory of its own,
# so it never reaches the runtime image.
COPY requirements.lock requirements-build.lock ./
RUN pip install --require-hashes -r requirements.lock \
    && pip install --require-hashes --target /opt/build-backend -r requirements-build.lock

# The project itself (packages app, migrations, tenant_migrations). Its dependencies
# are already installed from the lock: --no-deps keeps pip from resolving anything
# else, and --no-build-isolation keeps it from fetching an unpinned hatchling into a
# build environment of its own; it uses the one installed above (PYTHONPATH). Nothing
# in this stage is then unpinned, and it builds offline once the locks' wheels are at hand.
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY tenant_migrations ./tenant_migrations
RUN PYTHONPATH=/opt/build-backend pip install --no-deps --no-build-isolation .

# --- runtime: the venv, wsgi.py and nothing else -----------------------------------
FROM ${PYTHON_IMAGE}

RUN groupadd --system --gid 10001 tenantry \
    && useradd --system --uid 10001 --gid tenantry --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin tenantry

# Same path as in the build stage: a venv's scripts carry absolute shebangs.
COPY --from=build /opt/venv /opt/venv

WORKDIR /srv/tenantry
COPY wsgi.py gunicorn.conf.py ./

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLASK_APP=wsgi \
    INSTANCE_PATH=/tmp/tenantry

# Numeric, so an orchestrator can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000

# Liveness only (/healthz touches no database), on the port gunicorn.conf.py binds.
# Slim images have no curl; urlopen raises on a refused connection or any 4xx/5xx,
# which makes the exit status non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=4)"]

# Fail fast, for gunicorn and for one-shot `flask ...` commands alike, instead of
# falling back to the embedded development database.
ENTRYPOINT ["/bin/sh", "-c", ": \"${DATABASE_URL:?DATABASE_URL must be set (this image never starts the embedded PostgreSQL)}\"; exec \"$@\"", "tenantry"]
# Bind address, workers, timeouts, logs and no control socket: all in gunicorn.conf.py.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
