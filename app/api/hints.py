"""Tenant hints: the Host (``<slug>.<TENANT_BASE_DOMAIN>``) and ``X-Tenant`` a client may send.

A hint never selects a tenant: the credential (API key or JWT) does. A hint is only
compared with the tenant the credential already authenticated, after authentication,
so without valid credentials it changes nothing (401 all the same). A hint naming
another tenant is a 404 with the body of any unknown URL, whether or not that tenant
exists: the slug is compared as a string, never looked up.

Host, when ``TENANT_BASE_DOMAIN`` is set (port, case and a trailing dot ignored):

- ``<label>.<base>``: ``label`` must name the credential's tenant, else 404;
- deeper names under the base (``x.acme.<base>``): 404, no tenant lives there;
- the bare base domain, a host outside it (an address, an internal service name, a
  health check), or no Host at all: no hint. Refusing those would break internal
  callers and add nothing, since the credential alone decides the tenant;
  which hosts may reach the app at all is the proxy's (or ``TRUSTED_HOSTS``') job.

``X-Tenant``, with or without a base domain: when sent, it must name the credential's
tenant, else 404 (an empty or comma-joined value names none).

A label names a slug when equal to it ignoring case, with ``-`` read as ``_``: slugs
may hold underscores, which DNS host names cannot, and never hold hyphens, so
``acme-eu.<base>`` is tenant ``acme_eu``'s host and no other's.

The raw ``Host`` header is parsed here, not ``request.host``: Werkzeug turns a host with
characters outside ``[a-z0-9.-]`` (an underscore) into an empty string, which would
read as "no hint" instead of a mismatch.
"""

from __future__ import annotations

import logging

from flask import current_app, request
from werkzeug.exceptions import NotFound

from app.logs import redact

log = logging.getLogger(__name__)


def host_name(host_header: str | None) -> str | None:
    """The name of a ``Host`` value: lowercased, without port or trailing dot; None for none or IPv6."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):  # an IPv6 literal never names a tenant
        return None
    name, sep, port = host.rpartition(":")
    if sep and (port.isdigit() or not port):
        host = name
    return host.rstrip(".") or None


def host_hint(host_header: str | None, base_domain: str) -> str | None:
    """The tenant label a Host carries under ``base_domain``; None when it carries none.

    ``acme.example.com`` under ``example.com`` is ``"acme"``; ``x.acme.example.com`` is
    ``"x.acme"`` (which names no tenant); ``example.com`` and ``other.org`` are None.
    """
    host = host_name(host_header)
    suffix = "." + base_domain
    if host is None or not host.endswith(suffix):
        return None
    return host[: -len(suffix)]


def names(hint: str, slug: str) -> bool:
    """Whether a hint names the tenant ``slug`` (case-insensitive, ``-`` read as ``_``)."""
    return hint.strip().lower().replace("-", "_") == slug


def check_hints(slug: str) -> None:
    """After authentication: 404 when the Host or X-Tenant names a tenant other than ``slug``."""
    base_domain = current_app.config.get("TENANT_BASE_DOMAIN")
    if base_domain:
        label = host_hint(request.headers.get("Host"), base_domain)
        if label is not None and not names(label, slug):
            _mismatch("Host", label, slug)
    for value in request.headers.getlist("X-Tenant"):
        if not names(value, slug):
            _mismatch("X-Tenant", value, slug)


def _mismatch(source: str, hint: str, slug: str) -> None:
    # The hint is client input: a credential sent there by mistake must not reach the log.
    log.info("%s hint %r does not name the credential's tenant %r: 404", source, redact(hint[:80]), slug)
    raise NotFound()
