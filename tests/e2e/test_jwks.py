"""RS256 keys from the identity provider's JWKS endpoint: cached, rotated by kid, never hammered.

The test starts its own JWKS endpoint (a small HTTP server on loopback whose key set the test
changes) and counts how often the app fetches it.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

from app.config import ConfigError, validate
from app.testing import assert_problem

AUDIENCE = "tenantry-api"


class FakeJwks:
    """A JWKS endpoint: ``keys`` is what it serves, ``fetches`` how often it was asked, ``up`` whether it answers."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.up = True
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if not fake.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                fake.fetches += 1
                body = json.dumps({"keys": fake.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def publish(self, *keys: tuple[str, rsa.RSAPrivateKey]) -> None:
        self.keys = [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig", "alg": "RS256"}
                     for kid, key in keys]


@pytest.fixture
def jwks() -> Iterator[FakeJwks]:
    fake = FakeJwks()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("one", "two")}


def token(slug: str, key: rsa.RSAPrivateKey, kid: str | None, **claims: Any) -> dict[str, str]:
    payload = {"sub": "svc", "tenant": slug, "role": "viewer", "aud": AUDIENCE, "exp": int(time.time()) + 300, **claims}
    headers = {"kid": kid} if kid is not None else None
    return {"Authorization": f"Bearer {jwt.encode(payload, key, algorithm='RS256', headers=headers)}"}


def test_keys_are_fetched_once_cached_and_rotated_by_kid(make_app, make_tenant, jwks, keys):
    jwks.publish(("k1", keys["one"]))
    app = make_app(JWT_JWKS_URL=jwks.url, JWT_AUDIENCE=AUDIENCE, JWT_JWKS_MIN_REFRESH_SECONDS=0)
    client, tenant = app.test_client(), make_tenant()
    for _ in range(5):
        assert client.get("/v1/repositories", headers=token(tenant.slug, keys["one"], "k1")).status_code == 200
    assert jwks.fetches == 1  # cached: one fetch for five requests
    # The provider rotates: k2 in, k1 out. A token signed with k2 makes the app fetch the set again.
    jwks.publish(("k2", keys["two"]))
    assert client.get("/v1/repositories", headers=token(tenant.slug, keys["two"], "k2")).status_code == 200
    assert jwks.fetches == 2
    # k1 is gone from the set the app now holds: its tokens are refused.
    body = assert_problem(client.get("/v1/repositories", headers=token(tenant.slug, keys["one"], "k1")), 401)
    assert "'k1'" in body["detail"]
    # A token signed with another key under a known kid fails its signature.
    body = assert_problem(client.get("/v1/repositories", headers=token(tenant.slug, keys["one"], "k2")), 401)
    assert "signature" in body["detail"]
    # No kid: refused, without a fetch.
    fetched = jwks.fetches
    assert_problem(client.get("/v1/repositories", headers=token(tenant.slug, keys["two"], None)), 401)
    assert jwks.fetches == fetched


def test_made_up_kids_fetch_the_set_at_most_once_per_interval(make_app, make_tenant, jwks, keys):
    jwks.publish(("k1", keys["one"]))
    app = make_app(JWT_JWKS_URL=jwks.url, JWT_AUDIENCE=AUDIENCE, JWT_JWKS_MIN_REFRESH_SECONDS=30)
    client, tenant = app.test_client(), make_tenant()
    assert client.get("/v1/repositories", headers=token(tenant.slug, keys["one"], "k1")).status_code == 200
    for n in range(20):
        assert_problem(client.get("/v1/repositories", headers=token(tenant.slug, keys["two"], f"forged-{n}")), 401)
    assert jwks.fetches == 1


def test_an_unreachable_endpoint_after_the_cache_expires_is_503_not_401(make_app, make_tenant, jwks, keys):
    jwks.publish(("k1", keys["one"]))
    app = make_app(JWT_JWKS_URL=jwks.url, JWT_AUDIENCE=AUDIENCE, JWT_JWKS_CACHE_SECONDS=1)
    client, tenant = app.test_client(), make_tenant()
    auth = token(tenant.slug, keys["one"], "k1")
    assert client.get("/v1/repositories", headers=auth).status_code == 200
    jwks.up = False
    time.sleep(1.2)
    body = assert_problem(client.get("/v1/repositories", headers=auth), 503, "service-unavailable")
    assert "127.0.0.1" not in body["detail"]  # the endpoint's address stays in the log
    jwks.up = True
    assert client.get("/v1/repositories", headers=auth).status_code == 200


def test_only_rsa_keys_of_2048_bits_verify(make_app, make_tenant, jwks, keys):
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwks.publish(("small", small), ("k1", keys["one"]))
    jwks.keys.append({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "use": "sig"})
    app = make_app(JWT_JWKS_URL=jwks.url, JWT_AUDIENCE=AUDIENCE, JWT_JWKS_MIN_REFRESH_SECONDS=0)
    client, tenant = app.test_client(), make_tenant()
    assert client.get("/v1/repositories", headers=token(tenant.slug, keys["one"], "k1")).status_code == 200
    with warnings.catch_warnings():  # PyJWT warns when signing with it: the point here
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        weak = token(tenant.slug, small, "small")
    body = assert_problem(client.get("/v1/repositories", headers=weak), 401)
    assert "2048" in body["detail"]
    forged = jwt.encode({"sub": "x", "tenant": tenant.slug, "role": "admin", "aud": AUDIENCE,
                         "exp": int(time.time()) + 60}, "secret-secret-secret-secret-secret", algorithm="HS256",
                        headers={"kid": "hmac"})
    assert_problem(client.get("/v1/repositories", headers={"Authorization": f"Bearer {forged}"}), 401)


@pytest.mark.parametrize(("values", "message"), [
    ({"JWT_JWKS_URL": "http://idp.example.com/jwks", "JWT_AUDIENCE": "a"}, "https"),
    ({"JWT_JWKS_URL": "file:///etc/passwd", "JWT_AUDIENCE": "a"}, "https"),
    ({"JWT_JWKS_URL": "https://idp.example.com/jwks"}, "JWT_AUDIENCE must be set"),
])
def test_a_jwks_url_is_https_and_needs_an_audience(values, message):
    with pytest.raises(ConfigError, match=message):
        validate(dict(values))
