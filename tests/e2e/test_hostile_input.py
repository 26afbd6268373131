"""Hostile input: every request gets a 4xx problem (never a 500) and the database is unchanged.

Each test sends a family of hostile requests (SQL and identifier injection, text that
PostgreSQL cannot store, bodies that are too big, too deep or not JSON, page sizes out of
range) against tenants that hold data, collects every response that is not what it
should be, and reports them all at once. Before and after, it takes a snapshot of every
row of the public tables and of every tenant schema, and the list of schemas: a refused
request must leave all of it as it was.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, text

from app.tenancy.naming import quote_ident
from app.testing import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

#: Strings that try to leave a quoted literal or identifier, or to name a schema of their own.
INJECTIONS = [
    "x'; DROP TABLE public.tenants; --",
    "acme' OR '1'='1",
    "' OR ''='",
    't_acme" CASCADE; --',
    'acme"; DROP SCHEMA public CASCADE; --',
    "acme; DROP SCHEMA public CASCADE",
    "acme/**/OR/**/1=1",
    "acme\\'",
    "$1",
    "%s",
    "acme--",
    "public",
    "pg_catalog",
    "information_schema",
    "pg_toast",
    "ACME",
    "acme\n",
    "acme\r\nX-Injected: 1",
    " acme",
    "acme ",
    "\u0430cme",  # Cyrillic a
    "acme\u200b",  # zero-width space
    "a" * 41,
    "a",
    "",
]

#: Values that must not pass for a row id.
BAD_IDS = ["1 OR 1=1", "1;DROP TABLE repositories", "1'", "0x1", "1e3", "1.0", "-1", "0", "+1", "9" * 40, "%20"]

#: What PostgreSQL text cannot hold (NUL), and what psycopg cannot encode (lone surrogates).
UNSTORABLE = ["\u0000", "a\u0000b", "\ud800", "x\udfff", "\udbff\u0000"]


@dataclass
class Tenant:
    slug: str
    auth: dict[str, str]
    repository_ids: list[int]


@dataclass
class Failure:
    what: str
    status: int
    body: str

    def __str__(self) -> str:
        return f"{self.what} -> {self.status}: {self.body[:300]}"


def snapshot(engine: Engine) -> dict[str, list[str]]:
    """Every row of the public tables and of every tenant schema, and every schema's name."""
    with engine.connect() as conn:
        shot = {"schemas": list(conn.execute(text("SELECT nspname FROM pg_namespace ORDER BY 1")).scalars())}
        tables = conn.execute(text(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname = 'public' OR schemaname LIKE 't\\_%' ORDER BY 1, 2"
        )).all()
        for schema, table in tables:
            if (schema, table) == ("public", "usage_counters"):
                continue  # an authenticated request is metered whatever it is answered; flushed in the background
            qualified = f"{quote_ident(schema) if schema != 'public' else 'public'}.\"{table}\""
            # last_used_at moves on a successful request once a minute: not a change a request made
            shot[qualified] = list(conn.execute(text(
                f"SELECT (to_jsonb(t) - 'last_used_at')::text FROM {qualified} t ORDER BY 1")).scalars())
    return shot


@pytest.fixture
def world(client, make_tenant, engine) -> Iterator[dict[str, Any]]:
    """Two tenants with repositories, keys and audit events; the database is the same after the test."""
    tenants = []
    for slug in ("victim_one", "victim_two"):
        made = make_tenant(slug, plan="enterprise")
        ids = []
        for n in range(3):
            response = client.post("/v1/repositories", headers=made.auth,
                                   json={"github_repo_id": 100 + n, "owner": "octo", "name": f"{slug}-{n}"})
            assert response.status_code == 201, response.json
            ids.append(response.json["id"])
        tenants.append(Tenant(slug, made.auth, ids))
    # a key issued (not only the first one) and last_used_at settled, so refused requests change nothing
    assert client.post("/v1/api-keys", json={"role": "viewer"}, headers=tenants[0].auth).status_code == 201
    before = snapshot(engine)
    yield {"tenants": tenants, "before": before}
    after = snapshot(engine)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"hostile requests changed {changed}"


class Probe:
    """Sends requests, keeps every answer that is a 5xx, not a problem, or not the expected status."""

    def __init__(self, client) -> None:
        self.client = client
        self.failures: list[Failure] = []
        self.sent = 0

    def send(self, method: str, path: str, *, expect: int | set[int] | Callable[[Any], bool],
             headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        self.sent += 1
        what = f"{method.upper()} {path} {kwargs.get('json', kwargs.get('data', ''))!r:.120}"
        response = getattr(self.client, method)(path, headers=headers or {}, **kwargs)
        status = response.status_code
        body = response.get_data(as_text=True)
        ok = expect(response) if callable(expect) else status in ({expect} if isinstance(expect, int) else expect)
        if status >= 400:
            problem = response.json if response.content_type == "application/problem+json" else None
            if problem is None or problem.get("status") != status or not {"type", "title", "detail"} <= set(problem):
                ok = False
        if status >= 500 or not ok:
            self.failures.append(Failure(what, status, body))
        return response

    def check(self) -> None:
        assert not self.failures, f"{len(self.failures)} of {self.sent} hostile requests:\n" + "\n".join(
            map(str, self.failures))


def empty_page_or_422(response) -> bool:
    """A free-text filter: no row matches the injection (it did not widen the query), or too long."""
    if response.status_code == 422:
        return True
    return response.status_code == 200 and response.json["items"] == []


def test_injection_in_slugs_ids_query_and_headers_is_refused(client, world):
    probe = Probe(client)
    a, b = world["tenants"]
    for payload in INJECTIONS:
        quoted = quote(payload, safe="")
        probe.send("post", "/v1/admin/tenants", headers=ADMIN, json={"slug": payload, "name": "x"}, expect=422)
        probe.send("get", f"/v1/admin/tenants/{quoted}", headers=ADMIN, expect=404)
        probe.send("patch", f"/v1/admin/tenants/{quoted}", headers=ADMIN, json={"status": "suspended"},
                   expect={404, 422})
        probe.send("delete", f"/v1/admin/tenants/{quoted}", headers=ADMIN, expect=404)
        probe.send("get", f"/v1/admin/plans/{quoted}", headers=ADMIN, expect=404)
        probe.send("patch", f"/v1/admin/tenants/{a.slug}", headers=ADMIN, json={"plan": payload}, expect=422)
        probe.send("post", "/v1/admin/tenants", headers=ADMIN,
                   json={"slug": "fresh_slug", "name": "x", "plan": payload}, expect=422)
        probe.send("get", f"/v1/admin/tenants?revision={quoted}", headers=ADMIN, expect=empty_page_or_422)
        probe.send("get", f"/v1/admin/audit-events?tenant={quoted}&action={quoted}", headers=ADMIN,
                   expect=empty_page_or_422)
        probe.send("get", f"/v1/audit-events?action={quoted}", headers=a.auth, expect=empty_page_or_422)
        for path in ("/v1/repositories", "/v1/api-keys", "/v1/admin/tenants", "/v1/admin/migrations"):
            headers = ADMIN if path.startswith("/v1/admin") else a.auth
            # An empty cursor is the first page (as documented); any other one not issued is 422.
            probe.send("get", f"{path}?cursor={quoted}", headers=headers, expect=422 if payload else 200)
            probe.send("get", f"{path}?limit={quoted}", headers=headers, expect=422)
        probe.send("get", f"/v1/repositories?enabled={quoted}", headers=a.auth, expect=422)
        probe.send("get", f"/v1/audit-events?since={quoted}", headers=a.auth, expect=422)
        # A tenant named in the query or a header does not change whose rows come back.
        mine = {f"{a.slug}-{n}" for n in range(3)}
        header_safe = payload if payload.isascii() and payload.isprintable() and payload else "x"
        # X-Tenant is a verified hint: naming another tenant is 404, never that tenant's rows.
        probe.send("get", "/v1/repositories", headers={**a.auth, "X-Tenant": b.slug}, expect=404)
        for query, headers in ((f"?tenant={b.slug}", {}), ("", {"X-Tenant": a.slug}),
                               ("", {"X-Tenant-Slug": b.slug}), ("", {"X-Request-ID": header_safe})):
            response = probe.send("get", f"/v1/repositories{query}", headers={**a.auth, **headers}, expect=200)
            if {r["name"] for r in response.json["items"]} != mine:
                probe.failures.append(Failure(f"rows of {a.slug} with {query or headers}", 200,
                                              response.get_data(as_text=True)))
    for bad_id in BAD_IDS:
        quoted = quote(bad_id, safe="")
        for method in ("get", "patch", "delete"):
            kwargs = {"json": {"enabled": False}} if method == "patch" else {}
            probe.send(method, f"/v1/repositories/{quoted}", headers=a.auth, expect=404, **kwargs)
        probe.send("delete", f"/v1/api-keys/{quoted}", headers=a.auth, expect=404)
        probe.send("get", f"/v1/admin/migrations/{quoted}", headers=ADMIN, expect=404)
    # Another tenant's ids, which exist in its schema only, name nothing here.
    for method in ("get", "patch", "delete"):
        kwargs = {"json": {"enabled": False}} if method == "patch" else {}
        probe.send(method, f"/v1/repositories/{max(b.repository_ids) + 1}", headers=a.auth, expect=404, **kwargs)
    probe.check()


def test_a_hostile_request_id_is_replaced_not_echoed_or_recorded(client, world):
    a = world["tenants"][0]
    for sent in ("'; DROP TABLE public.audit_events; --", "x" * 65, "a\u00e9", "a b", "a\tb"):
        response = client.get("/v1/repositories", headers={**a.auth, "X-Request-ID": sent.encode().decode("latin-1")})
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] != sent
        assert len(response.headers["X-Request-ID"]) == 32


def test_text_postgresql_cannot_store_is_422_naming_the_field(client, world):
    probe = Probe(client)
    a = world["tenants"][0]
    plan = {"max_repositories": None, "rate_limit_per_minute": None, "monthly_price_cents": 0}
    repo = {"github_repo_id": 999, "owner": "octo", "name": "n"}

    def names(field: str) -> Callable[[Any], bool]:
        return lambda r: r.status_code == 422 and field in r.json.get("errors", {})

    for bad in UNSTORABLE:
        for field, body in [
            ("slug", {"slug": bad, "name": "x"}),
            ("name", {"slug": "fresh_slug", "name": bad}),
            ("plan", {"slug": "fresh_slug", "name": "x", "plan": bad}),
        ]:
            probe.send("post", "/v1/admin/tenants", headers=ADMIN, json=body, expect=names(field))
        for field in ("name", "plan", "status"):
            probe.send("patch", f"/v1/admin/tenants/{a.slug}", headers=ADMIN, json={field: bad}, expect=names(field))
        probe.send("post", "/v1/admin/plans", headers=ADMIN, json={"name": bad, **plan}, expect=names("name"))
        for field in ("name", "role"):
            probe.send("post", "/v1/api-keys", headers=a.auth, json={"role": "viewer", field: bad}, expect=names(field))
        for field in ("owner", "name"):
            probe.send("post", "/v1/repositories", headers=a.auth, json={**repo, field: bad}, expect=names(field))
            probe.send("patch", f"/v1/repositories/{a.repository_ids[0]}", headers=a.auth, json={field: bad},
                       expect=names(field))
        # hidden in an unknown field, nested, or in a key
        probe.send("post", "/v1/repositories", headers=a.auth, json={**repo, "extra": {"deep": [[bad]]}},
                   expect=names("extra"))
        probe.send("post", "/v1/repositories", headers=a.auth, json={**repo, bad: 1}, expect=422)
        probe.send("post", "/v1/repositories", headers=a.auth, json=[bad], expect=422)
        quoted = quote(bad.encode("utf-8", "surrogatepass"), safe="")
        if "\x00" not in bad:
            continue  # a surrogate in a URL is invalid UTF-8, which the server decodes to U+FFFD: harmless
        for path, headers, field in [
            (f"/v1/audit-events?action={quoted}", a.auth, "action"),
            (f"/v1/admin/audit-events?action={quoted}", ADMIN, "action"),
            (f"/v1/admin/audit-events?tenant={quoted}", ADMIN, "tenant"),
            (f"/v1/admin/tenants?revision={quoted}", ADMIN, "revision"),
            (f"/v1/repositories?cursor={quoted}", a.auth, "cursor"),
            (f"/v1/repositories?{quoted}=1", a.auth, None),
        ]:
            probe.send("get", path, headers=headers, expect=names(field) if field else 422)
        for path in (f"/v1/admin/tenants/{quoted}", f"/v1/admin/plans/{quoted}"):
            probe.send("get", path, headers=ADMIN, expect=404)
            probe.send("patch", path, headers=ADMIN, json={"monthly_price_cents": 1}, expect={404, 422})
        probe.send("delete", f"/v1/admin/tenants/{quoted}", headers=ADMIN, expect=404)
    # A cursor is opaque, but it decodes to a key: one holding NUL was never issued.
    for kind in ("str", "int"):
        forged = base64.urlsafe_b64encode(f"{kind}:a\x00".encode()).decode().rstrip("=")
        probe.send("get", f"/v1/admin/tenants?cursor={forged}", headers=ADMIN, expect=names("cursor"))
        probe.send("get", f"/v1/repositories?cursor={forged}", headers=a.auth, expect=names("cursor"))
    probe.check()


def test_bodies_too_big_too_deep_or_not_json_are_4xx(client, world, app):
    probe = Probe(client)
    a = world["tenants"][0]
    limit = app.config["MAX_CONTENT_LENGTH"]
    post = "/v1/repositories"

    def raw(data: str | bytes, content_type: str | None = "application/json", expect: Any = 400) -> None:
        kwargs: dict[str, Any] = {"data": data}
        if content_type is not None:
            kwargs["content_type"] = content_type
        probe.send("post", post, headers=a.auth, expect=expect, **kwargs)

    valid = json.dumps({"github_repo_id": 5, "owner": "octo", "name": "x"})
    # nesting deeper than Python's decoder goes (it raised RecursionError: a 500), and just under it
    raw("[" * 100_000 + "]" * 100_000)
    raw('{"a":' * 50_000 + "1" + "}" * 50_000)
    raw('{"github_repo_id": 5, "owner": "octo", "name": "x", "x": ' + "[" * 500 + "]" * 500 + "}", expect=422)
    # numbers Python will not parse (more than 4,300 digits: a ValueError, and a 500) or will not store
    raw('{"github_repo_id": ' + "9" * 5_000 + ', "owner": "octo", "name": "x"}')
    for number in ("9223372036854775808", "-1", "0", "-0", "1.5", "1e400", "NaN", "Infinity", "-Infinity", "true",
                   '"12"', "null", "[1]", "{}"):
        raw('{"github_repo_id": ' + number + ', "owner": "octo", "name": "x"}', expect=422)
    # not JSON, or not a JSON object
    for body in ("{not json", "", "   ", "\ufeff" + valid, valid[:-1], valid + "}", "'single'", "\x00"):
        raw(body, expect={400, 422})
    for body in ("null", "[]", '"string"', "42", "true", "[" + valid + "]"):
        raw(body, expect=422)
    raw(b'{"github_repo_id": 5, "owner": "oc\xfftocat", "name": "x"}')  # not UTF-8
    raw(valid.encode("utf-16"), "application/json; charset=utf-16")
    # too big: one string, many keys, a long list
    raw('{"owner": "' + "x" * limit + '"}', expect=413)
    raw(json.dumps({f"k{i}": i for i in range(limit // 12)})[: limit + 10], expect=413)
    raw(json.dumps({"github_repo_id": 5, "owner": "octo", "name": "x", "k": list(range(limit // 4))}), expect=413)
    # long strings the schemas bound
    for field, length in (("owner", 40), ("name", 101), ("owner", 10_000)):
        raw(json.dumps({"github_repo_id": 5, "owner": "octo", "name": "x", field: "a" * length}), expect=422)
    probe.send("post", "/v1/api-keys", headers=a.auth, json={"role": "viewer", "name": "k" * 101}, expect=422)
    probe.send("post", "/v1/admin/tenants", headers=ADMIN, json={"slug": "fresh_slug", "name": "n" * 201},
               expect=422)
    probe.send("post", "/v1/admin/plans", headers=ADMIN, expect=422,
               json={"name": "p" * 41, "max_repositories": None, "rate_limit_per_minute": None,
                     "monthly_price_cents": 0})
    # a trailing newline is not part of a valid name ("$" matched before it)
    for field in ("owner", "name"):
        raw(json.dumps({"github_repo_id": 5, "owner": "octo", "name": "x", field: "octo\n"}), expect=422)
    probe.send("post", "/v1/admin/plans", headers=ADMIN, expect=422,
               json={"name": "team\n", "max_repositories": None, "rate_limit_per_minute": None,
                     "monthly_price_cents": 0})
    # wrong content types
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/xml", "text/json", "application/jsonx", None):
        raw(valid, content_type, expect=415)
    probe.check()


def test_page_sizes_out_of_range_are_422(client, world):
    probe = Probe(client)
    a = world["tenants"][0]
    paged = [("/v1/repositories", a.auth), ("/v1/api-keys", a.auth), ("/v1/audit-events", a.auth),
             ("/v1/admin/tenants", ADMIN), ("/v1/admin/audit-events", ADMIN), ("/v1/admin/migrations", ADMIN)]
    for path, headers in paged:
        for limit in ("0", "-1", "201", "1000000", str(2**64), "1e2", "1.5", "NaN", "", "abc", "0x10"):
            probe.send("get", f"{path}?limit={quote(limit)}", headers=headers, expect=422)
        for limit in ("1", "200"):
            probe.send("get", f"{path}?limit={limit}", headers=headers, expect=200)
    probe.check()


def test_unicode_postgresql_can_store_round_trips_exactly(client, make_tenant):
    """What is refused above is only what cannot be stored: RTL, joiners, astral characters are kept."""
    tenant = make_tenant(plan="enterprise")
    names = [
        "\u202eevil\u202c.exe",  # right-to-left override
        "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",  # Hebrew and Arabic
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a ZWJ family: one glyph, five code points
        "e\u0301",  # NFD é
        "\u00e9",  # NFC é: another name
        "\U0001f600" * 100,  # at the limit in code points (400 UTF-8 bytes)
        "\ufeffbom",
        "tab\tand\nnewline",
    ]
    for name in names:
        response = client.post("/v1/api-keys", json={"role": "viewer", "name": name}, headers=tenant.auth)
        assert response.status_code == 201, (name, response.json)
        assert response.json["name"] == name
    listed = client.get("/v1/api-keys", headers=tenant.auth).json["items"]
    assert [k["name"] for k in listed[1:]] == names
    admin_name = "\u202e" + "\u0645" * 199
    response = client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"name": admin_name}, headers=ADMIN)
    assert response.status_code == 200 and response.json["name"] == admin_name
    # GitHub names are ASCII: look-alike letters are refused, not stored
    for owner in ("\u043ectocat", "octo\u200bcat", "\uff4fctocat"):
        response = client.post("/v1/repositories", json={"github_repo_id": 1, "owner": owner, "name": "x"},
                               headers=tenant.auth)
        assert response.status_code == 422 and "owner" in response.json["errors"]


@pytest.mark.parametrize("name", ["\u200b", "\u200b\u200b \u00a0", "\u2028\ufeff", "\u00ad\t"],
                         ids=["zero-width", "zero-width-and-spaces", "separators-and-bom", "soft-hyphen-tab"])
def test_a_name_with_nothing_visible_is_blank(admin_client, make_tenant, name):
    created = admin_client.post("/v1/admin/tenants", json={"slug": "invisible_co", "name": name})
    assert created.status_code == 422 and created.json["errors"]["name"] == ["Must not be blank."]
    assert admin_client.get("/v1/admin/tenants/invisible_co").status_code == 404
    tenant = make_tenant()
    renamed = admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"name": name})
    assert renamed.status_code == 422
    visible = admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"name": "\u200bA\u200b"})
    assert visible.status_code == 200 and visible.json["name"] == "\u200bA\u200b"


@pytest.mark.parametrize("digit", ["%EF%BC%91", "%D9%A1", "%E0%A5%A7"],
                         ids=["full-width", "arabic-indic", "devanagari"])
def test_ids_and_page_sizes_are_ascii_digits_only(client, tenant, digit):
    auth = tenant.auth
    made = client.post("/v1/repositories", json={"github_repo_id": 7, "owner": "o", "name": "one"}, headers=auth)
    assert made.status_code == 201 and made.json["id"] == 1
    assert client.get("/v1/repositories/1", headers=auth).status_code == 200
    foreign = client.get(f"/v1/repositories/{digit}", headers=auth)
    assert foreign.status_code == 404 and foreign.headers["Content-Type"] == "application/problem+json"
    assert client.delete(f"/v1/api-keys/{digit}", headers=auth).status_code == 404
    assert client.get("/v1/repositories?limit=1", headers=auth).status_code == 200
    page = client.get(f"/v1/repositories?limit={digit}", headers=auth)
    assert page.status_code == 422 and "limit" in page.json["errors"]
