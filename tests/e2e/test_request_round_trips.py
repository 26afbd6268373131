"""A tenant request pays one statement for "who is this and which schema" (issue 6).

The API-key lookup that opens the request's transaction sets the tenant's search_path
(and application_name and role) in the same statement; no other statement of the
request touches the search_path. A key that fails (wrong secret, revoked, suspended
tenant) leaves the transaction on the deny path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, text

from app.extensions import db


@contextmanager
def statements(app) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_identity_and_binding_share_the_first_statement(app, client, tenant):
    client.get("/v1/repositories", headers=tenant.auth)  # warm: plan limits, caches
    with statements(app) as seen:
        response = client.get("/v1/repositories", headers=tenant.auth)
    assert response.status_code == 200
    binding = [s for s in seen if "set_config" in s]
    assert len(binding) == 1, seen  # no after_begin deny, no separate bind
    assert "api_keys" in binding[0] and seen.index(binding[0]) == 0, seen


def test_a_wrong_secret_leaves_the_transaction_on_the_deny_path(app, client, tenant, engine):
    prefix = tenant.token.split("_")[1]
    with statements(app) as seen:
        response = client.get("/v1/repositories", headers={"Authorization": f"Bearer tnt_{prefix}_wrong"})
    assert response.status_code == 401
    # The lookup bound the live key's tenant; the deny path went back on before anything else.
    assert "api_keys" in seen[0] and "set_config" in seen[1] and len(seen) == 2, seen


def test_a_revoked_key_is_bound_to_nothing_by_its_own_lookup(app, client, tenant, engine):
    issued = client.post("/v1/api-keys", headers=tenant.auth, json={"name": "soon revoked", "role": "viewer"})
    assert issued.status_code == 201, issued.get_json()
    key = issued.get_json()
    assert client.delete(f"/v1/api-keys/{key['id']}", headers=tenant.auth).status_code in (200, 204)
    with statements(app) as seen:
        response = client.get("/v1/repositories", headers={"Authorization": f"Bearer {key['token']}"})
    assert response.status_code == 401
    assert len(seen) == 1 and "api_keys" in seen[0], seen  # the lookup itself set the deny path
    with engine.connect() as conn:  # and the key really is revoked (the test is about the path, not luck)
        assert conn.execute(text("SELECT revoked_at IS NOT NULL FROM public.api_keys WHERE id = :i"),
                            {"i": key["id"]}).scalar()
