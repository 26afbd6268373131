"""A local stand-in for the GitHub REST API, for the repository sync's tests (GitHub is unreachable here).

It serves what the sync calls, shaped like GitHub's documented responses
(docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app and
/rest/apps/installations#list-repositories-accessible-to-the-app-installation):

- ``POST /app/installations/{id}/access_tokens``: checks the App's JWT (RS256, signed
  with the App's private key, ``iss`` = the App id) with the public key, and issues an
  installation token;
- ``GET /installation/repositories?per_page=&page=``: with such a token, one page of the
  installation's repositories (``total_count``, ``repositories``, a ``Link`` header to
  the next and last pages, on this server);
- a rate-limit answer for the requests a test schedules one for: 403 with
  ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset`` (the primary limit), or 429 with
  ``Retry-After`` (a secondary limit), each answered once.

Every request is logged with its time and status, so a test can see the back-off.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

_TOKEN_PATH = re.compile(r"/app/installations/(\d+)/access_tokens")


def new_app_key() -> tuple[str, str]:
    """A fresh RSA key pair as an App has one: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def repository(repo_id: int, owner: str, name: str, owner_id: int = 1) -> dict[str, Any]:
    """A repository as GitHub lists it (the documented example's fields, trimmed)."""
    return {
        "id": repo_id, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": name, "full_name": f"{owner}/{name}",
        "owner": {"login": owner, "id": owner_id, "node_id": "MDQ6VXNlcjE=", "type": "Organization",
                  "site_admin": False, "url": f"https://api.github.com/users/{owner}"},
        "private": False, "html_url": f"https://github.com/{owner}/{name}", "description": "This your first repo!",
        "fork": False, "url": f"https://api.github.com/repos/{owner}/{name}", "default_branch": "main",
        "archived": False, "disabled": False, "visibility": "public",
        "created_at": "2011-01-26T19:01:12Z", "updated_at": "2011-01-26T19:14:43Z",
    }


@dataclass
class Logged:
    at: float
    method: str
    path: str
    status: int


@dataclass
class FakeGitHub:
    app_id: int
    public_key: str
    installations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    #: (installation id, page) -> ("primary" | "secondary", seconds): answered once with that rate limit.
    rate_limits: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    #: Where it is served (set by :func:`serve`).
    url: str = ""
    _tokens: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        base = f"http://{environ['HTTP_HOST']}"
        status, headers, body = self._answer(method, path, query, environ.get("HTTP_AUTHORIZATION", ""), base)
        with self._lock:
            self.log.append(Logged(time.monotonic(), method, f"{path}?page={query.get('page', '1')}", status))
        data = json.dumps(body).encode()
        start_response(f"{status} {'OK' if status < 400 else 'Error'}", [
            ("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(data))), *headers])
        return [data]

    def _answer(
        self, method: str, path: str, query: dict[str, str], authorization: str, base: str
    ) -> tuple[int, list, Any]:
        token_path = _TOKEN_PATH.fullmatch(path)
        if method == "POST" and token_path:
            return self._issue_token(int(token_path.group(1)), authorization)
        if method == "GET" and path == "/installation/repositories":
            return self._repositories(query, authorization, base)
        return 404, [], {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}

    def _issue_token(self, installation_id: int, authorization: str) -> tuple[int, list, Any]:
        scheme, _, token = authorization.partition(" ")
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"])
        except jwt.PyJWTError as exc:
            return 401, [], {"message": f"A JSON web token could not be decoded ({exc})"}
        if scheme != "Bearer" or str(claims.get("iss")) != str(self.app_id):
            return 401, [], {"message": "'Issuer' claim ('iss') must be an Integer"}
        if installation_id not in self.installations:
            return 404, [], {"message": "Not Found"}
        issued = "ghs_" + secrets.token_hex(18)
        with self._lock:
            self._tokens[issued] = installation_id
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 201, [], {"token": issued, "expires_at": expires, "permissions": {"metadata": "read"},
                         "repository_selection": "selected"}

    def _repositories(self, query: dict[str, str], authorization: str, base: str) -> tuple[int, list, Any]:
        scheme, _, token = authorization.partition(" ")
        installation_id = self._tokens.get(token) if scheme.lower() == "token" else None
        if installation_id is None:
            return 401, [], {"message": "Bad credentials"}
        page, per_page = int(query.get("page", 1)), min(int(query.get("per_page", 30)), 100)
        limited = self.rate_limits.pop((installation_id, page), None)
        if limited is not None:
            kind, seconds = limited
            if kind == "secondary":
                return 429, [("Retry-After", str(seconds))], {
                    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                               "again."}
            reset = int(time.time()) + seconds
            return 403, [("X-RateLimit-Limit", "5000"), ("X-RateLimit-Remaining", "0"),
                         ("X-RateLimit-Reset", str(reset)), ("X-RateLimit-Resource", "core")], {
                "message": f"API rate limit exceeded for installation ID {installation_id}.",
                "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}
        every = self.installations[installation_id]
        last = max(1, -(-len(every) // per_page))
        links = [f'<{base}/installation/repositories?per_page={per_page}&page={n}>; rel="{rel}"'
                 for n, rel in ((page + 1, "next"), (last, "last")) if page < last]
        return 200, [("Link", ", ".join(links))] if links else [], {
            "total_count": len(every), "repository_selection": "selected",
            "repositories": every[(page - 1) * per_page: page * per_page]}


@contextmanager
def serve(fake: FakeGitHub) -> Iterator[str]:
    """The fake on a free loopback port, in a thread; its base URL (what GITHUB_API_URL takes)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, fake, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, name="fake-github", daemon=True)
    thread.start()
    try:
        fake.url = f"http://127.0.0.1:{server.server_port}/"
        yield fake.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
