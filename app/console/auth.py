"""Who is at the console: the admin token exchanged once for a signed session cookie.

The operator posts the admin token and a name (the audit actor becomes
``console:<name>``). The token is compared in constant time and never stored: the
session holds the operator's name, when they were last seen, and a fingerprint of
the admin token (an HMAC under ``SECRET_KEY``), so rotating ``ADMIN_TOKEN`` ends every
console session at its next request. A tenant API key or JWT is refused by its shape
before anything else is looked at.

The cookie is Flask's signed session cookie with ``HttpOnly``, ``SameSite=Strict``,
``Path=/console/`` (it never reaches /v1/…: the admin API accepts only its bearer
token) and ``Secure`` whenever the request came over HTTPS. A session idle for
``CONSOLE_IDLE_MINUTES`` ends twice over: the browser drops the cookie (its expiry is
renewed on each request) and the server refuses a ``seen`` older than that. A request
console.js makes by itself (polling the overview's running fan-out) is not activity:
it leaves ``seen`` as it was, so an open tab never keeps an idle session alive.

Failed sign-ins are counted per client address with ``limits``, in the storage of
``RATELIMIT_STORAGE_URI`` (falling back to this process's memory while it fails):
past :data:`FAILED_SIGN_INS`, the address gets 429 until its window ends, even with
the right token. The address is ``request.remote_addr``: behind proxies, the one
``TRUSTED_PROXY_COUNT`` reads from X-Forwarded-For (``app.factory._trust_proxies``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from datetime import timedelta
from typing import Any

from flask import Flask, Request, current_app, g, has_request_context, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.tenancy import api_keys, audit, jwt_tokens

log = logging.getLogger(__name__)

#: Failed sign-ins allowed per client address per minute; the next attempt gets 429.
FAILED_SIGN_INS = RateLimitItemPerMinute(5)
#: What an operator's name may be: it becomes the audit actor ``console:<name>``.
OPERATOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

_THROTTLE = "tenantry_console_sign_in_throttle"
csrf = CSRFProtect()


class SignInRefused(Exception):
    """A sign-in that did not succeed; ``status`` is the page's (403 refused, 422 bad form, 429 throttled)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, for console paths only, ``Secure`` whenever the request came over HTTPS.

    Outside the console (the API) the cookie is not read, even when a client sends it: the
    session there is a new, empty one, never saved, so no request there can be
    authenticated or keep a console session alive with it.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.path.startswith(app.config["SESSION_COOKIE_PATH"]):
            return self.session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


class SignInThrottle:
    """Counts failed sign-ins per client address, in the configured storage or, while it fails, in memory."""

    def __init__(self, storage_uri: str) -> None:
        storage = storage_from_string(storage_uri)
        self.storage: Storage = storage if isinstance(storage, Storage) else MemoryStorage()
        self._shared = FixedWindowRateLimiter(self.storage)
        self._memory: FixedWindowRateLimiter | None = None

    def allows(self, address: str) -> bool:
        """Whether ``address`` may try again (has failed fewer than :data:`FAILED_SIGN_INS` times)."""
        return bool(self._call("test", address))

    def failed(self, address: str) -> None:
        self._call("hit", address)

    def _call(self, method: str, address: str) -> Any:
        args = (FAILED_SIGN_INS, "tenantry-console-sign-in", address)
        limiter = self._memory or self._shared
        try:
            return getattr(limiter, method)(*args)
        except self.storage.base_exceptions as exc:  # the shared storage: count in memory from now on
            log.warning("sign-in throttle storage failed (%s): counting in memory", type(exc).__name__)
            self._memory = FixedWindowRateLimiter(MemoryStorage())
            return getattr(self._memory, method)(*args)


def init_app(app: Flask) -> None:
    """The session cookie's settings, CSRF (for console views only) and the sign-in throttle."""
    app.config.update(
        SESSION_COOKIE_NAME="tenantry_console",
        SESSION_COOKIE_PATH="/console/",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=app.config["CONSOLE_IDLE_MINUTES"]),
        SESSION_REFRESH_EACH_REQUEST=True,
        # CSRFProtect checks no view by itself: the console's blueprint calls csrf.protect()
        # before each of its views, so the JSON API (bearer tokens, no cookie) is never touched.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session, which idles out on its own
    )
    app.session_interface = ConsoleSessionInterface()
    csrf.init_app(app)
    app.extensions[_THROTTLE] = SignInThrottle(app.config["RATELIMIT_STORAGE_URI"])


def sign_in(operator: str, token: str) -> None:
    """Start a session for ``operator`` if ``token`` is the admin token.

    :raise SignInRefused: throttled (429), a bad name (422), a tenant credential or the
        wrong token (403, counted as a failure), or no admin token configured.
    """
    address = request.remote_addr or "unknown"
    throttle: SignInThrottle = current_app.extensions[_THROTTLE]
    if not throttle.allows(address):
        raise SignInRefused("Too many failed sign-ins from this address; wait a minute and try again.", 429)
    if not OPERATOR.fullmatch(operator):
        raise SignInRefused("Your name: letters, digits and . _ @ - (up to 64), starting with a letter or digit.",
                            422)
    expected = current_app.config.get("ADMIN_TOKEN")
    if not expected:
        raise SignInRefused("Sign-in is disabled: ADMIN_TOKEN is not configured.")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        throttle.failed(address)
        log.warning("console sign-in refused from %s", address, extra={"event": "console.sign_in_refused"})
        if api_keys.looks_like_api_key(token) or jwt_tokens.looks_like_jwt(token):
            raise SignInRefused("Tenant API keys and JWTs cannot sign in to the console; use the admin token.")
        raise SignInRefused("Invalid admin token.")
    session.clear()  # nothing of an earlier session (its CSRF token included) carries over
    session.permanent = True
    session.update(operator=operator, seen=int(time.time()), token=_fingerprint(expected))
    log.info("console sign-in: %s", operator, extra={"event": "console.sign_in"})


def sign_out() -> None:
    session.clear()  # an empty session: Flask deletes the cookie


def current_operator() -> str | None:
    """The signed-in operator, or None: no session, idle too long, or the admin token changed since."""
    operator, seen, token = session.get("operator"), session.get("seen"), session.get("token")
    expected = current_app.config.get("ADMIN_TOKEN")
    if not (isinstance(operator, str) and isinstance(seen, int) and isinstance(token, str) and expected):
        return None
    idle = current_app.config["PERMANENT_SESSION_LIFETIME"].total_seconds()
    if time.time() - seen > idle or not hmac.compare_digest(token, _fingerprint(expected)):
        return None
    return operator


def act_as(operator: str, *, active: bool = True) -> None:
    """Record what this request does as ``console:<operator>``; an ``active`` one marks the session seen now.

    A page polling by itself (the overview while a fan-out runs) is not active: it never
    keeps an idle session alive.
    """
    if active:
        session["seen"] = int(time.time())
    g.console_operator = operator
    g.console_actor = audit.bind_actor(audit.Actor(label=f"console:{operator}", request_id=g.get("request_id")))


def release_operator(exc: BaseException | None = None) -> None:
    """``teardown_request``: unbind the actor :func:`act_as` bound."""
    token = g.pop("console_actor", None)
    if token is not None:
        audit.unbind_actor(token)


def _fingerprint(admin_token: str) -> str:
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, admin_token.encode(), hashlib.sha256).hexdigest()[:32]
