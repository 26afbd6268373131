"""Headers on every console response, and static assets served with SRI and a long cache life.

The pages carry no inline script or style (the CSP below would refuse them): the
stylesheet and the script are files under ``static/``, each referenced with its
Subresource Integrity hash and a ``?v=`` of that hash, so a year of caching never
serves a stale file after a release. Every other console response (pages, redirects,
errors) is ``no-store``: an authenticated page must not stay in a shared or back-button
cache after sign-out.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from flask import Flask, Response, request, url_for

#: The blueprint's name (its endpoints are ``console.*``) and where it is mounted.
BLUEPRINT = "console"
PREFIX = "/console/"
STATIC = Path(__file__).parent / "static"
#: A year: asset URLs change with their content.
STATIC_MAX_AGE = 365 * 24 * 3600

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "object-src 'none'",
))

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Asset:
    url: str
    integrity: str


@cache
def _digest(filename: str) -> str:
    return base64.b64encode(hashlib.sha384((STATIC / filename).read_bytes()).digest()).decode()


def asset(filename: str) -> Asset:
    """The URL (versioned by content) and the SRI value of a file under ``static/``."""
    digest = _digest(filename)
    version = digest[:12].replace("/", "_").replace("+", "-")
    return Asset(url=url_for(f"{BLUEPRINT}.static", filename=filename, v=version), integrity=f"sha384-{digest}")


def secure_headers(response: Response) -> Response:
    """``after_request`` of the app, for every path under /console/ (unknown ones included)."""
    if not request.path.startswith(PREFIX) and request.path != PREFIX.rstrip("/"):
        return response
    response.headers.update(HEADERS)
    if request.endpoint != f"{BLUEPRINT}.static":
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.after_request(secure_headers)
    app.jinja_env.globals["console_asset"] = asset
